//! Statements with named parameters. A large statement reads `:name` where PostgreSQL
//! wants `$n`, and each struct of parallel columns binds its own columns by name
//! ([`Columns`]), so adding a column is a field, an arm and a use in the SQL, not a
//! renumbering of thirty positional binds.

use sqlx::{Arguments, Postgres, postgres::PgArguments};

/// A statement's text with its `:name` parameters turned into `$1`, `$2`, ... (each name
/// one number, however often it is used), and the names in that order.
pub(crate) struct Named {
    sql: String,
    names: Vec<String>,
}

/// What binds some of a statement's parameters.
pub(crate) trait Columns {
    /// Adds the parameter `name` to `args`; `Ok(false)` when it is not one of these.
    fn bind(&self, name: &str, args: &mut PgArguments) -> Result<bool, sqlx::error::BoxDynError>;
}

impl Named {
    /// Parses `text`: `:name` is a parameter, `::type` a cast, and nothing inside a quoted
    /// string or a `--` comment is either.
    pub(crate) fn parse(text: &str) -> Self {
        let mut sql = String::with_capacity(text.len());
        let mut names: Vec<String> = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    sql.push(c);
                    for q in chars.by_ref() {
                        sql.push(q);
                        if q == '\'' {
                            break;
                        }
                    }
                }
                '-' if chars.peek() == Some(&'-') => {
                    sql.push(c);
                    for q in chars.by_ref() {
                        sql.push(q);
                        if q == '\n' {
                            break;
                        }
                    }
                }
                ':' if chars.peek() == Some(&':') => {
                    sql.push_str("::");
                    chars.next();
                }
                ':' if chars.peek().is_some_and(|n| n.is_ascii_lowercase() || *n == '_') => {
                    let mut name = String::new();
                    while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                        name.push(n);
                        chars.next();
                    }
                    let number = match names.iter().position(|known| *known == name) {
                        Some(i) => i + 1,
                        None => {
                            names.push(name);
                            names.len()
                        }
                    };
                    sql.push_str(&format!("${number}"));
                }
                c => sql.push(c),
            }
        }
        Self { sql, names }
    }

    /// The statement's text, with `$n` for the names.
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    /// The statement's arguments, each bound by the first of `sources` that has it. A
    /// parameter no source binds is a bug of ours, found by the first test that runs it.
    pub(crate) fn arguments(&self, sources: &[&dyn Columns]) -> sqlx::Result<PgArguments> {
        let mut args = PgArguments::default();
        for name in &self.names {
            let mut bound = false;
            for source in sources {
                if source.bind(name, &mut args).map_err(sqlx::Error::Encode)? {
                    bound = true;
                    break;
                }
            }
            assert!(bound, "no column binds the statement's parameter :{name}");
        }
        Ok(args)
    }
}

/// Adds `value` to `args` (for the arms of [`Columns::bind`]).
pub(crate) fn add<'q, T>(args: &mut PgArguments, value: T) -> Result<bool, sqlx::error::BoxDynError>
where
    T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q,
{
    args.add(value)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::Named;

    #[test]
    fn names_become_numbers_once_each_and_casts_and_strings_stay() {
        let named = Named::parse("-- :c is not\nSELECT :a::int[], ':not_me', :b, :a FROM t WHERE x = 'it''s'");
        assert_eq!(named.sql, "-- :c is not\nSELECT $1::int[], ':not_me', $2, $1 FROM t WHERE x = 'it''s'");
        assert_eq!(named.names, ["a", "b"]);
    }
}
