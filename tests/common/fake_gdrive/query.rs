//! The `q` of files.list, as far as Drive's search grammar goes for what the
//! fake stores: `name` with `=`, `!=` and `contains` only (Drive refuses `<`
//! and `>` on names — there is no start-after), `'ID' in parents`, `trashed`,
//! `mimeType`, `appProperties has { key='k' and value='v' }`, joined by `and`,
//! `or`, `not` and parentheses. Anything else is refused as Drive refuses a
//! query it cannot read: 400 `invalid` at `q`.

use super::store::File;

#[derive(Debug)]
pub enum Query {
    All,
    Name(Op, String),
    InParents(String),
    Trashed(bool),
    Mime(Op, String),
    AppProperty(String, String),
    Not(Box<Query>),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Word(String),
    Sym(&'static str),
}

fn lex(q: &str) -> Result<Vec<Tok>, ()> {
    let c: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '"' {
            let quote = ch;
            let mut s = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err(()),
                    Some('\\') => {
                        s.push(*c.get(i + 1).ok_or(())?);
                        i += 2;
                    }
                    Some(x) if *x == quote => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        s.push(*x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if ch.is_ascii_alphanumeric() || ch == '_' {
            let start = i;
            while c
                .get(i)
                .is_some_and(|x| x.is_ascii_alphanumeric() || *x == '_' || *x == '.')
            {
                i += 1;
            }
            out.push(Tok::Word(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let sym = match two.as_str() {
                "!=" => "!=",
                "<=" => "<=",
                ">=" => ">=",
                _ => match ch {
                    '=' => "=",
                    '<' => "<",
                    '>' => ">",
                    '(' => "(",
                    ')' => ")",
                    '{' => "{",
                    '}' => "}",
                    _ => return Err(()),
                },
            };
            i += sym.len();
            out.push(Tok::Sym(sym));
        }
    }
    Ok(out)
}

pub fn parse(q: &str) -> Result<Query, ()> {
    if q.trim().is_empty() {
        return Ok(Query::All);
    }
    let toks = lex(q)?;
    let mut p = Parser { toks, at: 0 };
    let e = p.or()?;
    if p.at != p.toks.len() {
        return Err(());
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Result<Tok, ()> {
        let t = self.toks.get(self.at).cloned().ok_or(())?;
        self.at += 1;
        Ok(t)
    }

    fn word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn expect_word(&mut self, w: &str) -> Result<(), ()> {
        if self.word(w) {
            self.at += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), ()> {
        match self.next()? {
            Tok::Sym(x) if x == s => Ok(()),
            _ => Err(()),
        }
    }

    fn string(&mut self) -> Result<String, ()> {
        match self.next()? {
            Tok::Str(s) => Ok(s),
            _ => Err(()),
        }
    }

    fn or(&mut self) -> Result<Query, ()> {
        let mut e = self.and()?;
        while self.word("or") {
            self.at += 1;
            e = Query::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Query, ()> {
        let mut e = self.unary()?;
        while self.word("and") {
            self.at += 1;
            e = Query::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Query, ()> {
        if self.word("not") {
            self.at += 1;
            return Ok(Query::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Sym("(")) {
            self.at += 1;
            let e = self.or()?;
            self.expect_sym(")")?;
            return Ok(e);
        }
        self.term()
    }

    fn op(&mut self) -> Result<Op, ()> {
        match self.next()? {
            Tok::Sym("=") => Ok(Op::Eq),
            Tok::Sym("!=") => Ok(Op::Ne),
            Tok::Word(w) if w == "contains" => Ok(Op::Contains),
            // `<`, `>`, `<=`, `>=` are not operators on names in Drive.
            _ => Err(()),
        }
    }

    fn term(&mut self) -> Result<Query, ()> {
        match self.next()? {
            Tok::Str(id) => {
                self.expect_word("in")?;
                self.expect_word("parents")?;
                Ok(Query::InParents(id))
            }
            Tok::Word(w) if w == "name" => {
                let op = self.op()?;
                Ok(Query::Name(op, self.string()?))
            }
            Tok::Word(w) if w == "mimeType" => {
                let op = self.op()?;
                Ok(Query::Mime(op, self.string()?))
            }
            Tok::Word(w) if w == "trashed" => {
                let ne = match self.next()? {
                    Tok::Sym("=") => false,
                    Tok::Sym("!=") => true,
                    _ => return Err(()),
                };
                let value = match self.next()? {
                    Tok::Word(v) if v == "true" => true,
                    Tok::Word(v) if v == "false" => false,
                    _ => return Err(()),
                };
                Ok(Query::Trashed(value != ne))
            }
            Tok::Word(w) if w == "appProperties" => {
                self.expect_word("has")?;
                self.expect_sym("{")?;
                self.expect_word("key")?;
                self.expect_sym("=")?;
                let k = self.string()?;
                self.expect_word("and")?;
                self.expect_word("value")?;
                self.expect_sym("=")?;
                let v = self.string()?;
                self.expect_sym("}")?;
                Ok(Query::AppProperty(k, v))
            }
            _ => Err(()),
        }
    }
}

impl Query {
    pub fn matches(&self, f: &File) -> bool {
        let text = |op: Op, have: &str, want: &str| match op {
            Op::Eq => have == want,
            Op::Ne => have != want,
            // Drive matches `contains` on names by word prefix; a substring is
            // the fake's approximation.
            Op::Contains => have.contains(want),
        };
        match self {
            Query::All => true,
            Query::Name(op, s) => text(*op, &f.name, s),
            Query::Mime(op, s) => text(*op, &f.mime, s),
            Query::InParents(id) => f.parents.iter().any(|p| p == id),
            Query::Trashed(t) => f.trashed == *t,
            Query::AppProperty(k, v) => f.app_properties.get(k) == Some(v),
            Query::Not(q) => !q.matches(f),
            Query::And(a, b) => a.matches(f) && b.matches(f),
            Query::Or(a, b) => a.matches(f) || b.matches(f),
        }
    }
}
