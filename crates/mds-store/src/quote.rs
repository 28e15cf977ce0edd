//! The one place SQL identifiers and literals are quoted. Every dynamic
//! name or value that cannot be a bind parameter (DDL) goes through here.

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// `'value'` (or ` E'...'` when backslashes appear), safe in any DDL.
pub fn literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("mds_control"), "\"mds_control\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert!(literal("a\\b").contains("E'"));
    }
}
