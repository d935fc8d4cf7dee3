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
