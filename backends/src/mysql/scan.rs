//! A small MySQL lexer: enough to count statements, read a statement's leading words, and
//! notice session-changing syntax, while skipping strings, quoted identifiers and comments
//! (`#`, `-- `, `/* */`; the body of `/*! ... */` is code and is scanned).

/// What sluice needs to know about a COM_QUERY text before it runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Non-empty statements in the text.
    pub statements: usize,
    /// Up to four leading words of the first statement, upper-cased; a back-quoted
    /// identifier is kept as written, without its quotes.
    pub words: Vec<String>,
    /// User variables (`@x`) are read or written.
    pub user_variables: bool,
    /// Named locks (`GET_LOCK(`) are taken.
    pub named_locks: bool,
    /// For every statement, its first two words upper-cased and joined by a space
    /// (`CREATE TABLE`, `SELECT`), empty when it starts with no word.
    pub heads: Vec<String>,
}

/// How the server lexes: MySQL's defaults (backslash escapes, `"` quotes strings).
pub fn scan(sql: &str) -> Scan {
    scan_with(sql, true, false)
}

/// Scans under the session's `sql_mode`: `backslash_escapes` (no NO_BACKSLASH_ESCAPES),
/// `ansi_quotes` (ANSI_QUOTES: `"` quotes identifiers, where backslashes do not escape).
pub fn scan_with(sql: &str, backslash_escapes: bool, ansi_quotes: bool) -> Scan {
    let b = sql.as_bytes();
    let mut out = Scan::default();
    let mut i = 0;
    let mut in_statement = false;
    let mut exec_comment = false;
    let mut prev_word: Option<String> = None;
    let mut head_words = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let start = i + 1;
                let escapes = backslash_escapes && c != b'`' && !(c == b'"' && ansi_quotes);
                i = skip_quoted(b, i, escapes);
                if !in_statement {
                    in_statement = true;
                    out.statements += 1;
                    out.heads.push(String::new());
                    head_words = 2;
                }
                if c == b'`' && out.statements == 1 && out.words.len() < 4 {
                    let end = i.saturating_sub(1).max(start);
                    out.words
                        .push(String::from_utf8_lossy(&b[start..end]).replace("``", "`"));
                }
                prev_word = None;
                continue;
            }
            b'#' => {
                i = skip_line(b, i);
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2)
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                i = skip_line(b, i);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                if b.get(i + 2) == Some(&b'!')
                    || (b.get(i + 2) == Some(&b'M') && b.get(i + 3) == Some(&b'!'))
                {
                    i += if b[i + 2] == b'M' { 4 } else { 3 };
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    exec_comment = true;
                    continue;
                }
                i = match find(b, i + 2, b"*/") {
                    Some(end) => end + 2,
                    None => b.len(),
                };
                continue;
            }
            b'*' if exec_comment && b.get(i + 1) == Some(&b'/') => {
                exec_comment = false;
                i += 2;
                continue;
            }
            b';' => {
                in_statement = false;
                i += 1;
                prev_word = None;
                continue;
            }
            b'@' => {
                if b.get(i + 1) != Some(&b'@') {
                    out.user_variables = true;
                } else {
                    i += 1;
                }
            }
            b'(' if prev_word.as_deref() == Some("GET_LOCK") => out.named_locks = true,
            _ => {}
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if !in_statement {
            in_statement = true;
            out.statements += 1;
            out.heads.push(String::new());
            head_words = 0;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
            let word = sql[start..i].to_ascii_uppercase();
            if out.statements == 1 && out.words.len() < 4 {
                out.words.push(word.clone());
            }
            if head_words < 2 {
                if let Some(head) = out.heads.last_mut() {
                    if !head.is_empty() {
                        head.push(' ');
                    }
                    head.push_str(&word);
                }
                head_words += 1;
            }
            prev_word = Some(word);
            continue;
        }
        if !c.is_ascii_whitespace() && c != b'(' {
            prev_word = None;
        }
        i += 1;
    }
    out
}

fn skip_quoted(b: &[u8], start: usize, escapes: bool) -> usize {
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && escapes {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn skip_line(b: &[u8], start: usize) -> usize {
    match b[start..].iter().position(|&c| c == b'\n') {
        Some(n) => start + n + 1,
        None => b.len(),
    }
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statements_past_strings_and_comments() {
        assert_eq!(scan("SELECT 1").statements, 1);
        assert_eq!(scan("SELECT 1;").statements, 1);
        assert_eq!(scan("SELECT ';'; -- x;\n").statements, 1);
        assert_eq!(scan("SELECT 1; SELECT 2").statements, 2);
        assert_eq!(scan("SELECT 1 /* ; */ # ;\n").statements, 1);
        assert_eq!(scan("SELECT `a;b` FROM t").statements, 1);
        assert_eq!(scan("SELECT 1 /*!; DROP TABLE t */").statements, 2);
        assert_eq!(scan("  ;  ; ").statements, 0);
        assert_eq!(scan("SELECT 'it''s;'; x").statements, 2);
    }

    #[test]
    fn follows_the_sql_mode() {
        let nbe = r"SELECT 'a\'; USE other; SELECT '\'";
        assert_eq!(scan(nbe).statements, 1);
        assert_eq!(scan_with(nbe, false, false).statements, 3);
        let ansi = r#"SELECT "a\"; USE other; SELECT "\""#;
        assert_eq!(scan(ansi).statements, 1);
        assert_eq!(
            scan_with(ansi, true, true).heads,
            ["SELECT", "USE OTHER", "SELECT"]
        );
    }

    #[test]
    fn reads_the_head_of_every_statement() {
        let s = scan("create table t (a int); insert into t values (1);\n select 1");
        assert_eq!(s.heads, vec!["CREATE TABLE", "INSERT INTO", "SELECT"]);
    }

    #[test]
    fn reads_leading_words_and_session_syntax() {
        let s = scan("use `my db`");
        assert_eq!(s.words, vec!["USE", "my db"]);
        assert_eq!(scan("/* hi */ Set @x = 1").words[..1], ["SET"]);
        assert!(scan("SET @x = 1").user_variables);
        assert!(!scan("SELECT @@version").user_variables);
        assert!(!scan("SELECT '@x'").user_variables);
        assert!(scan("SELECT get_lock ('a', 1)").named_locks);
        assert!(!scan("SELECT 'get_lock('").named_locks);
    }
}
