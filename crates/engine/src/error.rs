//! How an engine error maps onto the API: each module error says which kind it is, so the
//! daemon turns any of them into an HTTP status with one match.

/// The kind of an engine error, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: no such container, image or exec instance.
    NotFound,
    /// 409: the object is in a state that forbids the operation.
    Conflict,
    /// 400: the request itself is wrong.
    Invalid,
    /// 304: nothing to do (start of a running container, stop of a stopped one).
    NotModified,
    /// 500: everything else.
    Internal,
}

/// The error and its sources on one line, as Docker prints causes: "outer: inner" (a source
/// whose text the outer one already holds is not repeated).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
