//! File names as the store accepts them. The building block validates names too; checking
//! again here keeps a bug there from reaching outside the root directory.

use plinth_core::{Error, Result};

/// The marker in the names of uploads in progress: `.<name>.tmp-<uuid>`.
const TEMP_MARKER: &str = ".tmp-";

/// Whether a path segment is (or looks like) an upload in progress.
pub(super) fn is_temp(segment: &str) -> bool {
    segment.starts_with('.') && segment.contains(TEMP_MARKER)
}

/// The name of the temporary file an upload of `file_name` writes to.
pub(super) fn temp_name(file_name: &str) -> String {
    format!(".{file_name}{TEMP_MARKER}{}", uuid::Uuid::new_v4())
}

/// Check a file name: relative, `/`-separated, no empty, `.` or `..` segments, no NUL bytes
/// or backslashes, and no segment that looks like an upload in progress.
pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("the file name is empty"));
    }
    check_chars(name, "file name")?;
    for segment in name.split('/') {
        check_segment(name, segment, "file name")?;
    }
    Ok(())
}

/// Check a list prefix: like a name, but it may be empty, end with `/`, and its last
/// segment may be a partial name.
pub(super) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_chars(prefix, "prefix")?;
    let dirs = prefix.rsplit_once('/').map(|(dirs, _)| dirs);
    for segment in dirs.into_iter().flat_map(|d| d.split('/')) {
        check_segment(prefix, segment, "prefix")?;
    }
    Ok(())
}

fn check_chars(name: &str, what: &str) -> Result<()> {
    let problem = if name.contains('\0') {
        "contains a NUL byte"
    } else if name.contains('\\') {
        "contains a backslash; use / to separate directories"
    } else if name.starts_with('/') {
        "is absolute; names are relative to the store"
    } else {
        return Ok(());
    };
    Err(Error::invalid_argument(format!(
        "{what} {name:?} {problem}"
    )))
}

fn check_segment(name: &str, segment: &str, what: &str) -> Result<()> {
    let problem = match segment {
        "" => "has an empty path segment",
        "." | ".." => "has a '.' or '..' segment",
        s if is_temp(s) => "looks like an upload in progress (.<name>.tmp-...)",
        _ => return Ok(()),
    };
    Err(Error::invalid_argument(format!(
        "{what} {name:?} {problem}"
    )))
}
