//! The domain enums as SQL text, for both stores: each is stored as its snake_case word, and a
//! word outside the vocabulary read back is an error (never a silent default).

use std::error::Error;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use tokio_postgres::types::{self as pg, IsNull, Type};

use crate::domain::{BlocklistKind, Outcome, ReviewStatus, Role, SessionState};

macro_rules! sql_text_enum {
    ($($t:ty),* $(,)?) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = value.as_str()?;
                <$t>::parse(s).ok_or_else(|| FromSqlError::Other(unknown(stringify!($t), s)))
            }
        }

        impl pg::ToSql for $t {
            fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                pg::ToSql::to_sql(&self.as_str(), ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as pg::ToSql>::accepts(ty)
            }
            pg::to_sql_checked!();
        }

        impl<'a> pg::FromSql<'a> for $t {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
                let s = <&str as pg::FromSql>::from_sql(ty, raw)?;
                <$t>::parse(s).ok_or_else(|| unknown(stringify!($t), s))
            }
            fn accepts(ty: &Type) -> bool {
                <&str as pg::FromSql>::accepts(ty)
            }
        }
    )*};
}

fn unknown(what: &str, s: &str) -> Box<dyn Error + Sync + Send> {
    format!("stored {what} `{s}` is not one this version knows").into()
}

sql_text_enum!(ReviewStatus, SessionState, BlocklistKind, Role);

/// A stored outcome (`Outcome` belongs to the rules crate, so it is read through this wrapper).
pub struct OutcomeCol(pub Outcome);

impl FromSql for OutcomeCol {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        Outcome::parse(s).map(OutcomeCol).ok_or_else(|| FromSqlError::Other(unknown("outcome", s)))
    }
}

impl<'a> pg::FromSql<'a> for OutcomeCol {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let s = <&str as pg::FromSql>::from_sql(ty, raw)?;
        Outcome::parse(s).map(OutcomeCol).ok_or_else(|| unknown("outcome", s))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as pg::FromSql>::accepts(ty)
    }
}

/// A JSON text column: corrupt JSON is an error, never a default.
pub struct JsonCol<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromSql for JsonCol<T> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        serde_json::from_str(value.as_str()?).map(JsonCol).map_err(|e| FromSqlError::Other(corrupt(e)))
    }
}

impl<'a, T: serde::de::DeserializeOwned> pg::FromSql<'a> for JsonCol<T> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let s = <&str as pg::FromSql>::from_sql(ty, raw)?;
        serde_json::from_str(s).map(JsonCol).map_err(corrupt)
    }
    fn accepts(ty: &Type) -> bool {
        <&str as pg::FromSql>::accepts(ty)
    }
}

fn corrupt(e: serde_json::Error) -> Box<dyn Error + Sync + Send> {
    format!("stored JSON is corrupt: {e}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_json_and_unknown_words_fail_loudly() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let read = |sql: &str| c.query_row(sql, [], |r| r.get::<_, JsonCol<Vec<String>>>(0)).map(|j| j.0);
        assert_eq!(read("SELECT '[\"a\"]'").unwrap(), vec!["a".to_owned()]);
        let err = read("SELECT '[\"a\"'").unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        let err = c.query_row("SELECT 'maybe'", [], |r| r.get::<_, OutcomeCol>(0)).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("`maybe`"), "{err}");
        let err = c.query_row("SELECT 'paused'", [], |r| r.get::<_, ReviewStatus>(0)).unwrap_err();
        assert!(err.to_string().contains("`paused`"), "{err}");
    }
}
