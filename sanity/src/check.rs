//! The vocabulary cases use to state what they expect.

use std::fmt::Debug;

use tonic::{Code, Status};

/// Why a case stopped before passing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The driver broke the rule (or a setup step failed).
    Fail(String),
    /// The case does not apply to this driver.
    Skip(String),
}

pub type CaseResult = Result<(), Stop>;

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::check::Stop::Fail(format!($($arg)+)));
        }
    };
}

pub fn fail(message: impl Into<String>) -> Stop {
    Stop::Fail(message.into())
}

/// The spec's spelling of a status code: `3 INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> String {
    let name = match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    };
    format!("{} {name}", code as i32)
}

/// `status code: message`, for failure text.
pub fn describe(status: &Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

fn expected(codes: &[Code]) -> String {
    codes
        .iter()
        .map(|c| code_name(*c))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The call must succeed; `what` names the call in the failure.
pub fn ok<T>(result: Result<T, Status>, what: &str) -> Result<T, Stop> {
    result.map_err(|status| fail(format!("{what}: expected 0 OK, got {}", describe(&status))))
}

/// The call must fail with one of `codes`.
pub fn code<T: Debug>(result: Result<T, Status>, codes: &[Code]) -> Result<Status, Stop> {
    match result {
        Ok(_) => Err(fail(format!("expected {}, got 0 OK", expected(codes)))),
        Err(status) if codes.contains(&status.code()) => Ok(status),
        Err(status) => Err(fail(format!(
            "expected {}, got {}",
            expected(codes),
            describe(&status)
        ))),
    }
}

/// The call must fail with INVALID_ARGUMENT (the Error Scheme's code for a
/// missing or invalid field).
pub fn invalid_argument<T: Debug>(result: Result<T, Status>) -> CaseResult {
    code(result, &[Code::InvalidArgument]).map(drop)
}

/// The call must fail with NOT_FOUND.
pub fn not_found<T: Debug>(result: Result<T, Status>) -> CaseResult {
    code(result, &[Code::NotFound]).map(drop)
}

/// Prefixes a failure with what it was about (which id or token was sent).
pub fn about(stop: Stop, what: impl std::fmt::Display) -> Stop {
    match stop {
        Stop::Fail(message) => Stop::Fail(format!("{what}: {message}")),
        skip => skip,
    }
}

/// The call must succeed or fail with one of `codes`; returns the value on
/// success.
pub fn ok_or_code<T>(result: Result<T, Status>, codes: &[Code]) -> Result<Option<T>, Stop> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(status) if codes.contains(&status.code()) => Ok(None),
        Err(status) => Err(fail(format!(
            "expected 0 OK or {}, got {}",
            expected(codes),
            describe(&status)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_like_the_spec() {
        assert_eq!(code_name(Code::InvalidArgument), "3 INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Aborted), "10 ABORTED");
    }

    #[test]
    fn code_accepts_listed_and_refuses_others() {
        let got: Result<(), Status> = Err(Status::not_found("x"));
        assert!(code(got, &[Code::NotFound, Code::InvalidArgument]).is_ok());
        let got: Result<(), Status> = Err(Status::internal("boom"));
        assert_eq!(
            code(got, &[Code::NotFound]).map(|s| s.code()),
            Err(Stop::Fail(
                "expected 5 NOT_FOUND, got 13 INTERNAL: boom".to_string()
            ))
        );
        let got: Result<(), Status> = Ok(());
        assert_eq!(
            invalid_argument(got),
            Err(Stop::Fail(
                "expected 3 INVALID_ARGUMENT, got 0 OK".to_string()
            ))
        );
    }
}
