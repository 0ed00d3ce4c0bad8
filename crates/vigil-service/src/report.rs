//! Error reports for people: an error and its causes on one line, each cause once.
//!
//! Many error types put their cause in their own message *and* return it as their
//! `source()` (thiserror's `"{path}: {source}"` with `#[source]`), so printing the
//! chain (`{:#}`) shows it twice: `…: Connection refused (os error 111): Connection
//! refused (os error 111)`. [`chain`] leaves out a cause whose text the report already
//! holds.

/// `err` and its causes, joined by `": "`, leaving out each cause whose text is
/// already in what comes before it.
pub fn chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct ReadError {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(ReadError {
            path: "/x".into(),
            source: io,
        })
        .context("TLS");
        assert_eq!(
            format!("{err:#}"),
            "TLS: cannot read /x: no such file: no such file"
        );
        assert_eq!(chain(&err), "TLS: cannot read /x: no such file");
        // A cause not in the message is kept.
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain(&err), "outer: inner");
    }
}
