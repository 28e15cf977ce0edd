//! Column masks of a preview's copy (`--mask TABLE.COLUMN=FUNCTION`):
//! applied to the copied database before it is switched in, so nothing
//! ever connects to the unmasked rows. `email` and `hash` are keyed with
//! a random salt of that copy (equal values stay equal, so joins and
//! uniqueness hold, but no one can look a value up in a dictionary);
//! `null` empties the column.

use mds_store::quote::{ident, literal};
use tokio_postgres::Client;

use crate::{ControlError, ControlResult};

/// The most masks one preview takes.
const MAX_MASKS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFunction {
    /// `user_<16 hex>@example.invalid`.
    Email,
    /// 64 hex characters.
    Hash,
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub schema: String,
    pub table: String,
    pub column: String,
    pub function: MaskFunction,
}

fn is_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && part.len() <= 63
}

impl Mask {
    /// `[SCHEMA.]TABLE.COLUMN=email|hash|null`.
    pub fn parse(raw: &str) -> ControlResult<Mask> {
        let bad = |why: &str| {
            ControlError::invalid(
                "masks",
                format!("{raw:?}: {why}; write TABLE.COLUMN=email|hash|null (or SCHEMA.TABLE.COLUMN=...)"),
            )
        };
        let (target, function) = raw.split_once('=').ok_or_else(|| bad("no ="))?;
        let function = match function.trim() {
            "email" => MaskFunction::Email,
            "hash" => MaskFunction::Hash,
            "null" => MaskFunction::Null,
            other => return Err(bad(&format!("{other:?} is not a mask function"))),
        };
        let parts: Vec<&str> = target.trim().split('.').collect();
        if !parts.iter().all(|p| is_identifier(p)) {
            return Err(bad("table and column must be plain SQL names"));
        }
        let (schema, table, column) = match parts.as_slice() {
            [table, column] => ("public", *table, *column),
            [schema, table, column] => (*schema, *table, *column),
            _ => return Err(bad("name a table and a column")),
        };
        Ok(Mask {
            schema: schema.to_string(),
            table: table.to_string(),
            column: column.to_string(),
            function,
        })
    }

    pub fn parse_all(raw: &[String]) -> ControlResult<Vec<Mask>> {
        if raw.len() > MAX_MASKS {
            return Err(ControlError::invalid(
                "masks",
                format!("at most {MAX_MASKS} masks"),
            ));
        }
        let masks = raw
            .iter()
            .map(|m| Mask::parse(m))
            .collect::<ControlResult<Vec<_>>>()?;
        for (n, m) in masks.iter().enumerate() {
            if masks[..n]
                .iter()
                .any(|o| (&o.schema, &o.table, &o.column) == (&m.schema, &m.table, &m.column))
            {
                return Err(ControlError::invalid(
                    "masks",
                    format!("{} is masked twice", m.name()),
                ));
            }
        }
        Ok(masks)
    }

    pub fn name(&self) -> String {
        match self.schema.as_str() {
            "public" => format!("{}.{}", self.table, self.column),
            schema => format!("{schema}.{}.{}", self.table, self.column),
        }
    }

    fn expression(&self, salt: &str) -> String {
        let column = ident(&self.column);
        let keyed = format!(
            "encode(sha256(convert_to({} || {column}::text, 'UTF8')), 'hex')",
            literal(salt)
        );
        match self.function {
            MaskFunction::Null => "NULL".to_string(),
            MaskFunction::Hash => format!("CASE WHEN {column} IS NULL THEN NULL ELSE {keyed} END"),
            MaskFunction::Email => format!(
                "CASE WHEN {column} IS NULL THEN NULL \
                 ELSE 'user_' || left({keyed}, 16) || '@example.invalid' END"
            ),
        }
    }
}

/// Masks the columns of the database `client` is connected to (as a
/// superuser: triggers and foreign-key checks do not fire). Each column
/// must exist, hold text for `email` and `hash`, and be nullable for
/// `null`. Returns how many rows each mask changed.
pub async fn apply(client: &Client, masks: &[Mask]) -> Result<Vec<(String, u64)>, String> {
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let salt = mds_crypto::random_password(32);
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .map_err(|e| e.to_string())?;
    let mut changed = Vec::new();
    for mask in masks {
        let found = client
            .query_opt(
                "SELECT data_type, udt_name, is_nullable FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
                &[&mask.schema, &mask.table, &mask.column],
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = found else {
            return Err(format!("mask {}: there is no such column", mask.name()));
        };
        let (data_type, udt, nullable): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let textual = matches!(
            data_type.as_str(),
            "text" | "character varying" | "character"
        ) || udt == "citext";
        if mask.function != MaskFunction::Null && !textual {
            return Err(format!(
                "mask {}: the column is {data_type}; email and hash masks take text columns \
                 (use null for others)",
                mask.name()
            ));
        }
        if mask.function == MaskFunction::Null && nullable != "YES" {
            return Err(format!(
                "mask {}: the column is NOT NULL; mask it with hash or email",
                mask.name()
            ));
        }
        let sql = format!(
            "UPDATE {}.{} SET {} = {}",
            ident(&mask.schema),
            ident(&mask.table),
            ident(&mask.column),
            mask.expression(&salt)
        );
        let rows = client
            .execute(&sql, &[])
            .await
            .map_err(|e| format!("mask {}: {e}", mask.name()))?;
        changed.push((mask.name(), rows));
    }
    client
        .batch_execute("RESET session_replication_role")
        .await
        .map_err(|e| e.to_string())?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks_and_refuses_what_is_not_one() {
        let m = Mask::parse("users.email=email").unwrap();
        assert_eq!(
            (m.schema.as_str(), m.table.as_str(), m.column.as_str()),
            ("public", "users", "email")
        );
        assert_eq!(m.function, MaskFunction::Email);
        let m = Mask::parse("crm.people.phone=null").unwrap();
        assert_eq!(
            (m.schema.as_str(), m.name().as_str()),
            ("crm", "crm.people.phone")
        );
        for bad in [
            "users.email",
            "users.email=rot13",
            "email=hash",
            "a.b.c.d=hash",
            "users;drop.x=hash",
            "\"users\".email=hash",
            "users..email=null",
        ] {
            assert!(Mask::parse(bad).is_err(), "{bad} parsed");
        }
        let twice = vec![
            "users.email=email".to_string(),
            "public.users.email=hash".to_string(),
        ];
        assert!(Mask::parse_all(&twice).is_err());
    }
}
