//! Test-only: checks every statement of [`super::statements`] against the
//! schema that `migrations/` creates, without a database.
//!
//! A small reader of the CQL this store uses (not a CQL engine): it parses
//! the `CREATE TABLE`s of the migrations into tables (columns, types,
//! partition and clustering keys) and each statement into its table, the
//! columns it selects, assigns and restricts, and the type of each bind
//! marker. The tests then check that statements only name columns that
//! exist, hit exactly one partition, bind values whose driver serialization
//! type-checks against the columns' types, and select exactly the columns of
//! the row structs, whose driver deserialization type-checks too. A one-row
//! "cell map" applies the encoded values of INSERTs and UPDATEs and serves
//! them back to SELECTs, so that a write and the read of the same row go
//! through the driver's real encoders and decoders.

use std::collections::BTreeMap;

use ::scylla::deserialize::row::{ColumnIterator, DeserializeRow};
use ::scylla::deserialize::FrameSlice;
use ::scylla::frame::response::result::{
    CollectionType, ColumnSpec, ColumnType, NativeType, TableSpec,
};
use ::scylla::serialize::row::{RowSerializationContext, SerializeRow};
use ::scylla::serialize::writers::RowWriter;

use super::migrate::{self, MIGRATIONS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// An identifier or keyword, lowercased; or a number.
    Word(String),
    /// A quoted string literal's contents.
    Str(String),
    Bind,
    Sym(String),
}

pub fn tokenize(cql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = cql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Word(
                chars[start..i].iter().collect::<String>().to_lowercase(),
            ));
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        s.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '?' {
            out.push(Tok::Bind);
            i += 1;
        } else if (c == '<' || c == '>') && chars.get(i + 1) == Some(&'=') {
            out.push(Tok::Sym(format!("{c}=")));
            i += 2;
        } else {
            out.push(Tok::Sym(c.to_string()));
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<(String, String)>,
    pub partition_key: Vec<String>,
    pub clustering_key: Vec<String>,
}

impl Table {
    pub fn column_type(&self, column: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, t)| t.as_str())
    }
}

/// The tables the migrations (and the migration machinery) create.
pub fn schema() -> BTreeMap<String, Table> {
    let mut statements: Vec<String> = vec![
        migrate::CREATE_SCHEMA_MIGRATIONS.to_owned(),
        migrate::CREATE_MIGRATION_LOCK.to_owned(),
    ];
    for m in MIGRATIONS {
        statements.extend(migrate::statements(m.cql));
    }
    let mut tables = BTreeMap::new();
    for s in statements {
        let table = parse_create_table(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
        assert!(
            tables.insert(table.name.clone(), table).is_none(),
            "a table is created twice"
        );
    }
    tables
}

fn word(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Word(w)) => Some(w),
        _ => None,
    }
}

fn is_sym(t: Option<&Tok>, s: &str) -> bool {
    matches!(t, Some(Tok::Sym(x)) if x == s)
}

pub fn parse_create_table(cql: &str) -> Result<Table, String> {
    let toks = tokenize(cql);
    let head: Vec<&str> = toks.iter().take(5).filter_map(|t| word(Some(t))).collect();
    if head != ["create", "table", "if", "not", "exists"] {
        return Err("not CREATE TABLE IF NOT EXISTS".into());
    }
    let name = word(toks.get(5)).ok_or("no table name")?.to_owned();
    if is_sym(toks.get(6), ".") {
        return Err("a migration must not name a keyspace".into());
    }
    if !is_sym(toks.get(6), "(") {
        return Err("no column list".into());
    }
    // Split the column list at top-level commas.
    let mut parts: Vec<Vec<Tok>> = vec![Vec::new()];
    let mut depth = 0;
    let mut i = 7;
    loop {
        let t = toks.get(i).ok_or("unclosed column list")?;
        match t {
            Tok::Sym(s) if s == "(" => depth += 1,
            Tok::Sym(s) if s == ")" && depth == 0 => break,
            Tok::Sym(s) if s == ")" => depth -= 1,
            Tok::Sym(s) if s == "," && depth == 0 => {
                parts.push(Vec::new());
                i += 1;
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("parts").push(t.clone());
        i += 1;
    }
    let mut table = Table {
        name,
        columns: Vec::new(),
        partition_key: Vec::new(),
        clustering_key: Vec::new(),
    };
    for part in parts {
        let words: Vec<&str> = part.iter().filter_map(|t| word(Some(t))).collect();
        if words.starts_with(&["primary", "key"]) {
            // PRIMARY KEY ((a, b), c, d) or PRIMARY KEY (a, c, d)
            let inner = &part[3..part.len() - 1];
            if is_sym(inner.first(), "(") {
                let close = inner
                    .iter()
                    .position(|t| is_sym(Some(t), ")"))
                    .ok_or("unclosed partition key")?;
                table.partition_key = inner[1..close]
                    .iter()
                    .filter_map(|t| word(Some(t)).map(str::to_owned))
                    .collect();
                table.clustering_key = inner[close + 1..]
                    .iter()
                    .filter_map(|t| word(Some(t)).map(str::to_owned))
                    .collect();
            } else {
                let cols: Vec<String> = inner
                    .iter()
                    .filter_map(|t| word(Some(t)).map(str::to_owned))
                    .collect();
                table.partition_key = cols[..1].to_vec();
                table.clustering_key = cols[1..].to_vec();
            }
        } else {
            let [column, typ, rest @ ..] = words.as_slice() else {
                return Err(format!("bad column definition {part:?}"));
            };
            table
                .columns
                .push(((*column).to_owned(), (*typ).to_owned()));
            if rest == ["primary", "key"] {
                table.partition_key = vec![(*column).to_owned()];
            }
        }
    }
    for key in table.partition_key.iter().chain(&table.clustering_key) {
        if table.column_type(key).is_none() {
            return Err(format!("key column {key} is not a column"));
        }
    }
    if table.partition_key.is_empty() {
        return Err("no primary key".into());
    }
    Ok(table)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
}

/// A value in a statement: a bind marker (its index) or a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Bind(usize),
    Lit(String),
}

/// What a bind marker stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// A value of this column.
    Column(String),
    /// A list of values of this column (`IN ?`).
    List(String),
    Limit,
    Ttl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub kind: Kind,
    pub table: String,
    pub selected: Vec<String>,
    /// INSERT columns and UPDATE `SET`s.
    pub assigned: Vec<(String, Val)>,
    /// WHERE restrictions: (column, operator, value).
    pub restricted: Vec<(String, String, Val)>,
    /// IF conditions (a lightweight transaction).
    pub lwt: bool,
    pub markers: Vec<Marker>,
    pub order_by: Option<String>,
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }
    fn peek_word(&self) -> Option<&str> {
        word(self.peek())
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn expect_word(&mut self, w: &str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Word(x)) if x == w => Ok(()),
            other => Err(format!("expected {w}, found {other:?}")),
        }
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Sym(x)) if x == s => Ok(()),
            other => Err(format!("expected {s}, found {other:?}")),
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }
    fn table(&mut self) -> Result<String, String> {
        let name = self.ident()?;
        if is_sym(self.peek(), ".") {
            self.next();
            return Ok(format!("{name}.{}", self.ident()?));
        }
        Ok(name)
    }
    fn value(&mut self, markers: &mut Vec<Marker>, marker: Marker) -> Result<Val, String> {
        match self.next() {
            Some(Tok::Bind) => {
                markers.push(marker);
                Ok(Val::Bind(markers.len() - 1))
            }
            Some(Tok::Str(s)) => Ok(Val::Lit(s)),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }
    fn using_ttl(&mut self, markers: &mut Vec<Marker>) -> Result<(), String> {
        if self.peek_word() == Some("using") {
            self.next();
            self.expect_word("ttl")?;
            self.value(markers, Marker::Ttl)?;
        }
        Ok(())
    }
    fn where_clause(&mut self, a: &mut Analysis) -> Result<(), String> {
        self.expect_word("where")?;
        loop {
            let column = self.ident()?;
            let op = match self.next() {
                Some(Tok::Sym(s)) => s,
                Some(Tok::Word(w)) if w == "in" => w,
                other => return Err(format!("expected an operator, found {other:?}")),
            };
            let marker = if op == "in" {
                Marker::List(column.clone())
            } else {
                Marker::Column(column.clone())
            };
            let v = self.value(&mut a.markers, marker)?;
            a.restricted.push((column, op, v));
            if self.peek_word() == Some("and") {
                self.next();
            } else {
                return Ok(());
            }
        }
    }
    fn if_clause(&mut self, a: &mut Analysis) -> Result<(), String> {
        if self.peek_word() != Some("if") {
            return Ok(());
        }
        self.next();
        a.lwt = true;
        match self.peek_word() {
            Some("not") => {
                self.next();
                self.expect_word("exists")
            }
            Some("exists") => {
                self.next();
                Ok(())
            }
            _ => {
                let column = self.ident()?;
                self.expect_sym("=")?;
                self.value(&mut a.markers, Marker::Column(column))?;
                Ok(())
            }
        }
    }
}

pub fn analyse(cql: &str) -> Result<Analysis, String> {
    let mut p = Parser {
        toks: tokenize(cql),
        i: 0,
    };
    let verb = p.ident()?;
    let mut a = Analysis {
        kind: Kind::Select,
        table: String::new(),
        selected: Vec::new(),
        assigned: Vec::new(),
        restricted: Vec::new(),
        lwt: false,
        markers: Vec::new(),
        order_by: None,
    };
    match verb.as_str() {
        "select" => {
            loop {
                a.selected.push(p.ident()?);
                if is_sym(p.peek(), ",") {
                    p.next();
                } else {
                    break;
                }
            }
            p.expect_word("from")?;
            a.table = p.table()?;
            if p.peek_word() == Some("where") {
                p.where_clause(&mut a)?;
            }
            if p.peek_word() == Some("order") {
                p.next();
                p.expect_word("by")?;
                let column = p.ident()?;
                if matches!(p.peek_word(), Some("asc" | "desc")) {
                    p.next();
                }
                a.order_by = Some(column);
            }
            if p.peek_word() == Some("limit") {
                p.next();
                p.value(&mut a.markers, Marker::Limit)?;
            }
        }
        "insert" => {
            a.kind = Kind::Insert;
            p.expect_word("into")?;
            a.table = p.table()?;
            p.expect_sym("(")?;
            let mut columns = Vec::new();
            loop {
                columns.push(p.ident()?);
                if is_sym(p.peek(), ",") {
                    p.next();
                } else {
                    break;
                }
            }
            p.expect_sym(")")?;
            p.expect_word("values")?;
            p.expect_sym("(")?;
            for (n, column) in columns.into_iter().enumerate() {
                if n > 0 {
                    p.expect_sym(",")?;
                }
                let v = p.value(&mut a.markers, Marker::Column(column.clone()))?;
                a.assigned.push((column, v));
            }
            p.expect_sym(")")?;
            p.if_clause(&mut a)?;
            p.using_ttl(&mut a.markers)?;
        }
        "update" => {
            a.kind = Kind::Update;
            a.table = p.table()?;
            p.using_ttl(&mut a.markers)?;
            p.expect_word("set")?;
            loop {
                let column = p.ident()?;
                p.expect_sym("=")?;
                let v = p.value(&mut a.markers, Marker::Column(column.clone()))?;
                a.assigned.push((column, v));
                if is_sym(p.peek(), ",") {
                    p.next();
                } else {
                    break;
                }
            }
            p.where_clause(&mut a)?;
            p.if_clause(&mut a)?;
        }
        "delete" => {
            a.kind = Kind::Delete;
            p.expect_word("from")?;
            a.table = p.table()?;
            p.where_clause(&mut a)?;
            p.if_clause(&mut a)?;
        }
        other => return Err(format!("unexpected statement {other}")),
    }
    if let Some(rest) = p.peek() {
        return Err(format!("unexpected {rest:?} after the statement"));
    }
    Ok(a)
}

pub fn cql_type(name: &str) -> ColumnType<'static> {
    ColumnType::Native(match name {
        "text" => NativeType::Text,
        "timestamp" => NativeType::Timestamp,
        "bigint" => NativeType::BigInt,
        "int" => NativeType::Int,
        "boolean" => NativeType::Boolean,
        other => panic!("type {other} is not used by this schema; add it here"),
    })
}

fn spec(name: &str, typ: ColumnType<'static>) -> ColumnSpec<'static> {
    ColumnSpec::owned(
        name.to_owned(),
        typ,
        TableSpec::owned("skald".into(), "t".into()),
    )
}

/// The types of a statement's bind markers, in order.
pub fn marker_specs(a: &Analysis, table: &Table) -> Vec<ColumnSpec<'static>> {
    let typ = |c: &str| {
        cql_type(
            table
                .column_type(c)
                .unwrap_or_else(|| panic!("{}.{c} does not exist", table.name)),
        )
    };
    a.markers
        .iter()
        .map(|m| match m {
            Marker::Column(c) => spec(c, typ(c)),
            Marker::List(c) => spec(
                c,
                ColumnType::Collection {
                    frozen: false,
                    typ: CollectionType::List(Box::new(typ(c))),
                },
            ),
            Marker::Limit => spec("[limit]", cql_type("int")),
            Marker::Ttl => spec("[ttl]", cql_type("int")),
        })
        .collect()
}

/// The encoded cells of bound values: `None` for null, absent for unset.
pub fn encode(
    specs: &[ColumnSpec<'_>],
    values: &impl SerializeRow,
) -> Vec<Option<Option<Vec<u8>>>> {
    let mut buf = Vec::new();
    let ctx = RowSerializationContext::from_specs(specs);
    values
        .serialize(&ctx, &mut RowWriter::new(&mut buf))
        .unwrap_or_else(|e| panic!("values do not serialize as {specs:?}: {e}"));
    let mut cells = Vec::new();
    let mut rest = buf.as_slice();
    while !rest.is_empty() {
        let len = i32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        rest = &rest[4..];
        match len {
            -2 => cells.push(None),
            -1 => cells.push(Some(None)),
            n => {
                let n = n as usize;
                cells.push(Some(Some(rest[..n].to_vec())));
                rest = &rest[n..];
            }
        }
    }
    assert_eq!(cells.len(), specs.len(), "one cell per bind marker");
    cells
}

/// One row of one table, as encoded cells (the key columns included).
#[derive(Debug, Default)]
pub struct CellRow {
    pub cells: BTreeMap<String, Vec<u8>>,
}

impl CellRow {
    /// Applies an INSERT or UPDATE (and its WHERE key) with these values;
    /// an unset value leaves the cell as it was, a null removes it.
    pub fn apply(&mut self, cql: &str, values: &impl SerializeRow) {
        let schema = schema();
        let a = analyse(cql).expect("statement");
        let table = &schema[&a.table];
        let cells = encode(&marker_specs(&a, table), values);
        let text_literal = |s: &str| s.as_bytes().to_vec();
        let mut set = |column: &str, v: &Val| match v {
            Val::Lit(s) => {
                self.cells.insert(column.to_owned(), text_literal(s));
            }
            Val::Bind(i) => match &cells[*i] {
                None => {}
                Some(None) => {
                    self.cells.remove(column);
                }
                Some(Some(bytes)) => {
                    self.cells.insert(column.to_owned(), bytes.clone());
                }
            },
        };
        for (column, v) in &a.assigned {
            set(column, v);
        }
        for (column, op, v) in &a.restricted {
            assert_eq!(op, "=", "a write restricts its key by equality");
            set(column, v);
        }
    }

    /// Serves this row to a SELECT, decoded by the driver into `R`.
    pub fn select<R>(&self, cql: &str) -> R
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let schema = schema();
        let a = analyse(cql).expect("statement");
        let table = &schema[&a.table];
        let specs: Vec<ColumnSpec<'static>> = a
            .selected
            .iter()
            .map(|c| spec(c, cql_type(table.column_type(c).expect("column"))))
            .collect();
        decode_row(&specs, |column| self.cells.get(column).cloned())
    }
}

/// Decodes one result row whose cells `cell` gives, through the driver's
/// row type check and deserializer.
pub fn decode_row<R>(specs: &[ColumnSpec<'_>], cell: impl Fn(&str) -> Option<Vec<u8>>) -> R
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    R::type_check(specs).unwrap_or_else(|e| panic!("row type does not match {specs:?}: {e}"));
    let mut raw = Vec::new();
    for s in specs {
        match cell(s.name()) {
            None => raw.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                raw.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                raw.extend_from_slice(&bytes);
            }
        }
    }
    let iter = ColumnIterator::new(specs, FrameSlice::new_borrowed(&raw));
    R::deserialize(iter).unwrap_or_else(|e| panic!("row does not deserialize: {e}"))
}
