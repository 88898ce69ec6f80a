//! Text field rules shared by every service: length in Unicode scalar values, and no NUL.

use crate::ApiError;

/// Checks `value` has `min..=max` characters and no NUL; otherwise a 422 naming the field.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::validation(format!("`{field}` must not contain NUL")));
    }
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::validation(format!("`{field}` must be {min}-{max} characters (got {n})")));
    }
    Ok(())
}

/// Parses `limit` query values: absent gives `default`, outside `min..=max` is a 422 (never clamped).
pub fn limit(value: Option<&str>, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::validation(format!("`limit` must be an integer in {min}..={max}"))),
        },
    }
}
