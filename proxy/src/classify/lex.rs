//! Lexing exactly as the server will, under the session's lexing settings.
//!
//! The server decides where a string literal, a quoted identifier or a comment starts and
//! ends by settings the client can change: PostgreSQL's `standard_conforming_strings`,
//! MySQL's `sql_mode` (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`). sqlparser lexes by fixed
//! rules, so text that sqlparser reads as one literal could run on the server as code.
//! [`normalize`] lexes the text under the session's settings and writes it again in a
//! canonical form that sqlparser's stock dialect lexes the same way: every string literal
//! as a plain `'...'`, ANSI-quoted identifiers in back quotes, comments as a space. What
//! the lexer cannot be sure of (an unterminated literal or comment, Unicode escapes, MySQL
//! executable comments) is refused.

use super::{Dialect, Unsupported};

/// The settings that decide how the server lexes a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lexing {
    /// PostgreSQL `standard_conforming_strings` (on: backslashes in `'...'` are plain
    /// characters). None while sluice cannot know it (changed in a transaction that has
    /// not ended): a statement is accepted only when both readings agree.
    pub standard_strings: Option<bool>,
    /// MySQL `sql_mode` has `ANSI_QUOTES`: `"..."` is an identifier, not a string.
    pub ansi_quotes: bool,
    /// MySQL `sql_mode` lacks `NO_BACKSLASH_ESCAPES`: backslashes escape in strings.
    pub backslash_escapes: bool,
}

impl Default for Lexing {
    /// The servers' defaults.
    fn default() -> Self {
        Lexing {
            standard_strings: Some(true),
            ansi_quotes: false,
            backslash_escapes: true,
        }
    }
}

impl Lexing {
    /// The MySQL lexing an `sql_mode` value sets (`'ANSI,NO_BACKSLASH_ESCAPES'`), or None
    /// when it names a mode whose effect on lexing sluice does not model.
    pub fn from_sql_mode(mode: &str) -> Option<Lexing> {
        let mut l = Lexing::default();
        for flag in mode.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let f = flag.to_ascii_uppercase();
            match f.as_str() {
                "ANSI_QUOTES" | "ANSI" => l.ansi_quotes = true,
                "NO_BACKSLASH_ESCAPES" => l.backslash_escapes = false,
                "DB2" | "MAXDB" | "MSSQL" | "POSTGRESQL" => l.ansi_quotes = true,
                f if SQL_MODE_FLAGS.contains(&f) => {}
                _ => return None,
            }
        }
        Some(l)
    }
}

/// `sql_mode` flags that do not change how a statement is lexed.
const SQL_MODE_FLAGS: &[&str] = &[
    "ALLOW_INVALID_DATES",
    "EMPTY_STRING_IS_NULL",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "HIGH_NOT_PRECEDENCE",
    "IGNORE_BAD_TABLE_OPTIONS",
    "IGNORE_SPACE",
    "NO_AUTO_CREATE_USER",
    "NO_AUTO_VALUE_ON_ZERO",
    "NO_DIR_IN_CREATE",
    "NO_ENGINE_SUBSTITUTION",
    "NO_FIELD_OPTIONS",
    "NO_KEY_OPTIONS",
    "NO_TABLE_OPTIONS",
    "NO_UNSIGNED_SUBTRACTION",
    "NO_ZERO_DATE",
    "NO_ZERO_IN_DATE",
    "ONLY_FULL_GROUP_BY",
    "PAD_CHAR_TO_FULL_LENGTH",
    "PIPES_AS_CONCAT",
    "REAL_AS_FLOAT",
    "SIMULTANEOUS_ASSIGNMENT",
    "STRICT_ALL_TABLES",
    "STRICT_TRANS_TABLES",
    "TIME_ROUND_FRACTIONAL",
    "TRADITIONAL",
];

/// PostgreSQL client encodings in which every byte below 0x80 is that ASCII character
/// (names as PostgreSQL compares them: lower case, only letters and digits).
const PG_ASCII_SAFE: &[&str] = &[
    "utf8",
    "unicode",
    "sqlascii",
    "latin1",
    "latin2",
    "latin3",
    "latin4",
    "latin5",
    "latin6",
    "latin7",
    "latin8",
    "latin9",
    "latin10",
    "iso88591",
    "iso88592",
    "iso88593",
    "iso88594",
    "iso88595",
    "iso88596",
    "iso88597",
    "iso88598",
    "iso88599",
    "iso885910",
    "iso885913",
    "iso885914",
    "iso885915",
    "iso885916",
    "win1250",
    "win1251",
    "win1252",
    "win1253",
    "win1254",
    "win1255",
    "win1256",
    "win1257",
    "win1258",
    "win866",
    "win874",
    "windows1250",
    "windows1251",
    "windows1252",
    "windows1253",
    "windows1254",
    "windows1255",
    "windows1256",
    "windows1257",
    "windows1258",
    "windows866",
    "windows874",
    "koi8r",
    "koi8u",
    "koi8",
    "eucjp",
    "euccn",
    "euckr",
    "euctw",
    "eucjis2004",
    "mule",
    "muleinternal",
    "alt",
    "cp866",
    "tcvn",
    "tcvn5712",
    "vscii",
    "abc",
];

/// MySQL character sets in which every byte below 0x80 is that ASCII character.
const MYSQL_ASCII_SAFE: &[&str] = &[
    "utf8", "utf8mb3", "utf8mb4", "latin1", "latin2", "latin5", "latin7", "ascii", "binary",
    "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866", "dec8", "greek", "hebrew",
    "hp8", "keybcs2", "koi8r", "koi8u", "macce", "macroman", "swe7", "tis620", "armscii8",
    "geostd8", "ujis", "eucjpms", "euckr", "gb2312",
];

/// Whether `name` is a client encoding (PostgreSQL) or character set (MySQL) under which
/// sluice's lexing of the text is exact. Encodings whose multi-byte characters may
/// contain ASCII bytes (SJIS, BIG5, GBK, GB18030, UHC, JOHAB, cp932) are not.
pub fn ascii_safe_encoding(dialect: Dialect, name: &str) -> bool {
    match dialect {
        Dialect::Postgres => {
            let clean: String = name
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            PG_ASCII_SAFE.contains(&clean.as_str())
        }
        Dialect::Mysql => {
            let n = name.trim().to_ascii_lowercase();
            // a collation names its character set first (utf8mb4_general_ci)
            MYSQL_ASCII_SAFE
                .iter()
                .any(|c| n == *c || n.strip_prefix(c).is_some_and(|r| r.starts_with('_')))
        }
        Dialect::Sqlite => true,
    }
}

/// The text written again so that sqlparser's stock dialect lexes it as the server will
/// under `lexing`.
pub fn normalize(sql: &str, dialect: Dialect, lexing: &Lexing) -> Result<String, Unsupported> {
    match dialect {
        Dialect::Postgres => match lexing.standard_strings {
            Some(standard) => postgres(sql, standard),
            // A reading the lexer refuses (an unterminated literal) is one the server
            // refuses too, so the statement can only run as the other reading.
            None => match (postgres(sql, true), postgres(sql, false)) {
                (Ok(on), Ok(off)) if on != off => Err(Unsupported(
                    "the statement reads differently with standard_conforming_strings on \
                     and off, and sluice does not know the session's setting now"
                        .into(),
                )),
                (Ok(on), _) => Ok(on),
                (Err(_), Ok(off)) => Ok(off),
                (Err(e), Err(_)) => Err(e),
            },
        },
        Dialect::Mysql => mysql(sql, lexing),
        Dialect::Sqlite => Ok(sql.to_string()),
    }
}

fn unsupported(what: &str) -> Unsupported {
    Unsupported(format!("{what} is not supported by access policy"))
}

fn pg_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The normalizer's output, built from the input's code runs and canonical literals.
struct Out<'a> {
    sql: &'a str,
    text: String,
    /// Start of the code run not yet copied.
    copied: usize,
}

impl<'a> Out<'a> {
    fn new(sql: &'a str) -> Out<'a> {
        Out {
            sql,
            text: String::with_capacity(sql.len() + 8),
            copied: 0,
        }
    }

    /// Copies the code up to `at`, then replaces `at..end` with `with`.
    fn replace(&mut self, at: usize, end: usize, with: &str) {
        self.text.push_str(&self.sql[self.copied..at]);
        self.text.push_str(with);
        self.copied = end;
    }

    fn finish(mut self) -> String {
        self.text.push_str(&self.sql[self.copied..]);
        self.text
    }
}

/// Block comment starting at `i` (after `/*`); PostgreSQL nests them, MySQL does not.
fn block_comment_end(b: &[u8], i: usize, nested: bool) -> Result<usize, Unsupported> {
    let mut depth = 1;
    let mut j = i + 2;
    while j + 1 < b.len() {
        if nested && b[j] == b'/' && b[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return Ok(j);
            }
        } else {
            j += 1;
        }
    }
    Err(unsupported("an unterminated comment"))
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p)
}

/// A PostgreSQL string body from `i` (after the opening quote): its raw bytes with
/// escapes resolved as far as classification needs (`''` and `\x` are the character),
/// and the index after the closing quote.
fn pg_string(b: &[u8], mut i: usize, escapes: bool) -> Result<(Vec<u8>, usize), Unsupported> {
    let mut body = Vec::new();
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => {
                let Some(&next) = b.get(i + 1) else { break };
                body.push(next);
                i += 2;
            }
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                body.push(b'\'');
                i += 2;
            }
            b'\'' => return Ok((body, i + 1)),
            c => {
                body.push(c);
                i += 1;
            }
        }
    }
    Err(unsupported("an unterminated string literal"))
}

/// A PostgreSQL string value as a standard `'...'` literal.
fn pg_literal(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    format!("'{}'", text.replace('\'', "''"))
}

/// The dollar-quote delimiter (`$tag$`, `$$`) starting at `i`, if one does.
fn dollar_tag(b: &[u8], i: usize) -> Option<&[u8]> {
    let mut j = i + 1;
    let start_ok = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    if j < b.len() && b[j] != b'$' {
        if !start_ok(b[j]) {
            return None;
        }
        while j < b.len() && (start_ok(b[j]) || b[j].is_ascii_digit()) {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then(|| &b[i..=j])
}

fn postgres(sql: &str, standard: bool) -> Result<String, Unsupported> {
    let b = sql.as_bytes();
    let mut out = Out::new(sql);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let after_ident = i > 0 && pg_ident_char(b[i - 1]);
        let next = b.get(i + 1).copied();
        match c {
            b'-' if next == Some(b'-') => {
                let end = line_end(b, i);
                out.replace(i, end, " ");
                i = end;
            }
            b'/' if next == Some(b'*') => {
                let end = block_comment_end(b, i, true)?;
                out.replace(i, end, " ");
                i = end;
            }
            b'\'' => {
                let (body, end) = pg_string(b, i + 1, !standard)?;
                out.replace(i, end, &pg_literal(&body));
                i = end;
            }
            b'e' | b'E' if !after_ident && next == Some(b'\'') => {
                let (body, end) = pg_string(b, i + 2, true)?;
                out.replace(i, end, &pg_literal(&body));
                i = end;
            }
            b'n' | b'N' if !after_ident && next == Some(b'\'') => {
                let (body, end) = pg_string(b, i + 2, !standard)?;
                out.replace(i, end, &pg_literal(&body));
                i = end;
            }
            b'b' | b'B' | b'x' | b'X' if !after_ident && next == Some(b'\'') => {
                // bit strings: digits only, no escapes
                let close = b[i + 2..].iter().position(|&c| c == b'\'');
                let Some(close) = close else {
                    return Err(unsupported("an unterminated bit string"));
                };
                i += close + 3;
            }
            b'u' | b'U'
                if !after_ident
                    && next == Some(b'&')
                    && matches!(b.get(i + 2), Some(b'\'' | b'"')) =>
            {
                return Err(unsupported("a Unicode escape literal (U&'...')"));
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err(unsupported("an unterminated quoted identifier")),
                        Some(b'"') if b.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            b'$' if !after_ident => match dollar_tag(b, i) {
                Some(tag) => {
                    let body_start = i + tag.len();
                    let close = b[body_start..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .ok_or_else(|| unsupported("an unterminated dollar-quoted string"))?;
                    let end = body_start + close + tag.len();
                    out.replace(i, end, &pg_literal(&b[body_start..body_start + close]));
                    i = end;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    Ok(out.finish())
}

/// A MySQL string body from `i` (after the opening `quote`) as a `'...'` literal for
/// sqlparser's MySQL dialect (which takes backslash escapes), and the index after it.
fn mysql_string(
    b: &[u8],
    mut i: usize,
    quote: u8,
    escapes: bool,
) -> Result<(String, usize), Unsupported> {
    let mut lit = vec![b'\''];
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && escapes {
            let Some(&next) = b.get(i + 1) else { break };
            lit.extend_from_slice(&[b'\\', next]);
            i += 2;
        } else if c == quote && b.get(i + 1) == Some(&quote) {
            lit.extend_from_slice(if quote == b'\'' { b"''" } else { b"\"" });
            i += 2;
        } else if c == quote {
            lit.push(b'\'');
            return Ok((String::from_utf8_lossy(&lit).into_owned(), i + 1));
        } else {
            match c {
                b'\\' => lit.extend_from_slice(b"\\\\"),
                b'\'' => lit.extend_from_slice(b"''"),
                c => lit.push(c),
            }
            i += 1;
        }
    }
    Err(unsupported("an unterminated string literal"))
}

/// A MySQL quoted identifier from `i` (after the opening `quote`): the name in back
/// quotes, and the index after it.
fn mysql_ident(b: &[u8], mut i: usize, quote: u8) -> Result<(String, usize), Unsupported> {
    let mut name = Vec::new();
    while i < b.len() {
        if b[i] == quote && b.get(i + 1) == Some(&quote) {
            name.push(quote);
            i += 2;
        } else if b[i] == quote {
            let name = String::from_utf8_lossy(&name).replace('`', "``");
            return Ok((format!("`{name}`"), i + 1));
        } else {
            name.push(b[i]);
            i += 1;
        }
    }
    Err(unsupported("an unterminated quoted identifier"))
}

fn mysql(sql: &str, lexing: &Lexing) -> Result<String, Unsupported> {
    let b = sql.as_bytes();
    let mut out = Out::new(sql);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'#' => {
                let end = line_end(b, i);
                out.replace(i, end, " ");
                i = end;
            }
            b'-' if next == Some(b'-')
                && b.get(i + 2)
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                let end = line_end(b, i);
                out.replace(i, end, " ");
                i = end;
            }
            b'/' if next == Some(b'*') => {
                if b.get(i + 2) == Some(&b'!') || b[i + 2..].starts_with(b"M!") {
                    return Err(Unsupported(
                        "MySQL executable comments (/*! ... */) are not supported by access \
                         policy"
                            .into(),
                    ));
                }
                let end = block_comment_end(b, i, false)?;
                out.replace(i, end, " ");
                i = end;
            }
            b'\'' => {
                let (lit, end) = mysql_string(b, i + 1, b'\'', lexing.backslash_escapes)?;
                out.replace(i, end, &lit);
                i = end;
            }
            b'"' if lexing.ansi_quotes => {
                let (name, end) = mysql_ident(b, i + 1, b'"')?;
                out.replace(i, end, &name);
                i = end;
            }
            b'"' => {
                let (lit, end) = mysql_string(b, i + 1, b'"', lexing.backslash_escapes)?;
                out.replace(i, end, &lit);
                i = end;
            }
            b'`' => {
                let (name, end) = mysql_ident(b, i + 1, b'`')?;
                out.replace(i, end, &name);
                i = end;
            }
            _ => i += 1,
        }
    }
    Ok(out.finish())
}

/// The value of the body of a canonical MySQL `'...'` literal (backslash escapes and
/// doubled quotes resolved), or None when a lone quote shows it is not one literal.
pub fn mysql_unescape(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'b' => out.push('\u{8}'),
                'Z' => out.push('\u{1a}'),
                // kept with their backslash (LIKE patterns)
                c @ ('%' | '_') => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            },
            '\'' => {
                if chars.next()? != '\'' {
                    return None;
                }
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(sql: &str, standard: bool) -> String {
        let l = Lexing {
            standard_strings: Some(standard),
            ..Lexing::default()
        };
        normalize(sql, Dialect::Postgres, &l).unwrap()
    }

    fn my(sql: &str, ansi: bool, escapes: bool) -> String {
        let l = Lexing {
            ansi_quotes: ansi,
            backslash_escapes: escapes,
            ..Lexing::default()
        };
        normalize(sql, Dialect::Mysql, &l).unwrap()
    }

    #[test]
    fn postgres_strings_follow_standard_conforming_strings() {
        // read as two strings with standard strings, as code with backslash escapes
        let attack = r"SELECT 'a\' , ' , (SELECT secret FROM hidden) --'";
        assert_eq!(pg(attack, true), attack);
        assert_eq!(
            pg(attack, false),
            r"SELECT 'a'' , ' , (SELECT secret FROM hidden)  "
        );
        assert_eq!(pg(r"SELECT E'x\'y'", true), "SELECT 'x''y'");
        assert_eq!(pg("SELECT $q$it's$q$, $$a$$", true), "SELECT 'it''s', 'a'");
        assert_eq!(pg("SELECT $1, a$b$ FROM t", true), "SELECT $1, a$b$ FROM t");
        assert_eq!(
            pg("SELECT 1 /* a /* b */ c */ -- d\n", true),
            "SELECT 1    \n"
        );
        assert_eq!(
            pg(r#"SELECT "a""b" FROM x"#, true),
            r#"SELECT "a""b" FROM x"#
        );
        let both = Lexing {
            standard_strings: None,
            ..Lexing::default()
        };
        assert!(normalize(attack, Dialect::Postgres, &both).is_err());
        assert!(normalize("SELECT 'plain'", Dialect::Postgres, &both).is_ok());
        // only one reading lexes: the server cannot run the other
        assert_eq!(
            normalize(r"SELECT 'it\'s'", Dialect::Postgres, &both).unwrap(),
            "SELECT 'it''s'"
        );
    }

    #[test]
    fn postgres_refuses_what_it_cannot_lex_for_sure() {
        let l = Lexing::default();
        for sql in [
            "SELECT 'open",
            "SELECT U&'\\0061'",
            "SELECT /* open",
            "SELECT $$x",
        ] {
            assert!(normalize(sql, Dialect::Postgres, &l).is_err(), "{sql}");
        }
    }

    #[test]
    fn mysql_strings_follow_sql_mode() {
        assert_eq!(
            my(
                r#"SELECT "a\" , (SELECT secret FROM hidden) , "x""#,
                true,
                true
            ),
            r#"SELECT `a\` , (SELECT secret FROM hidden) , `x`"#
        );
        assert_eq!(
            my(
                r#"SELECT "a\" , (SELECT secret FROM hidden) , ""#,
                false,
                true
            ),
            r#"SELECT 'a\" , (SELECT secret FROM hidden) , '"#
        );
        let nbe = r"SELECT 'a\' , (SELECT secret FROM hidden) , '\'";
        assert_eq!(
            my(nbe, false, false),
            r"SELECT 'a\\' , (SELECT secret FROM hidden) , '\\'"
        );
        assert_eq!(
            my("SELECT 1 # c\n-- d\n--1", false, true),
            "SELECT 1  \n \n--1"
        );
        assert_eq!(my("SELECT \"it's\"", false, true), "SELECT 'it''s'");
        let l = Lexing::default();
        assert!(normalize("SELECT 1 /*! UNION */", Dialect::Mysql, &l).is_err());
        assert!(normalize("SELECT 1 /*M! x */", Dialect::Mysql, &l).is_err());
        assert!(normalize("SELECT 'a\\'", Dialect::Mysql, &l).is_err());
    }

    #[test]
    fn sql_modes_and_encodings() {
        assert!(Lexing::from_sql_mode("ANSI").unwrap().ansi_quotes);
        let m = Lexing::from_sql_mode("STRICT_TRANS_TABLES,no_backslash_escapes").unwrap();
        assert!(!m.backslash_escapes && !m.ansi_quotes);
        assert!(Lexing::from_sql_mode("ORACLE").is_none());
        assert_eq!(Lexing::from_sql_mode(""), Some(Lexing::default()));
        for safe in ["UTF8", "utf-8", "LATIN1", "SQL_ASCII", "WIN1252", "EUC_JP"] {
            assert!(ascii_safe_encoding(Dialect::Postgres, safe), "{safe}");
        }
        for bad in [
            "SJIS",
            "Shift_JIS",
            "BIG5",
            "GBK",
            "UHC",
            "GB18030",
            "JOHAB",
            "WIN932",
        ] {
            assert!(!ascii_safe_encoding(Dialect::Postgres, bad), "{bad}");
        }
        for safe in ["utf8mb4", "latin1", "utf8mb4_general_ci", "binary", "ascii"] {
            assert!(ascii_safe_encoding(Dialect::Mysql, safe), "{safe}");
        }
        for bad in [
            "sjis",
            "cp932",
            "big5",
            "gbk",
            "gb18030",
            "gbk_chinese_ci",
            "ucs2",
        ] {
            assert!(!ascii_safe_encoding(Dialect::Mysql, bad), "{bad}");
        }
    }
}
