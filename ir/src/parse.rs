//! Parser for the text form printed by [`crate::print`]; `parse(&g.to_string())` rebuilds `g`
//! up to value renumbering. Parsing does not verify: run [`crate::verify`] on the result.

use std::collections::HashMap;

use crate::graph::{Family, Graph, ValueId, WeightDecl, WeightId};
use crate::op::{Attr, Op};
use crate::print::TEXT_FORMAT_VERSION;
use crate::types::{DType, Dim, TensorType};
use crate::IrError;

/// Parses a graph from its text form.
pub fn parse(text: &str) -> Result<Graph, IrError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with(';'));
    let err = |line: usize, msg: String| IrError::Parse { line, msg };

    let (n, header) = lines.next().ok_or_else(|| err(1, "empty input".into()))?;
    let family = match header.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["quamba-ir", version, family] => {
            if version.parse::<u32>().ok() != Some(TEXT_FORMAT_VERSION) {
                return Err(err(n, format!("text format version {version} is not supported (expected {TEXT_FORMAT_VERSION})")));
            }
            match *family {
                "mamba1" => Family::Mamba1,
                "mamba2" => Family::Mamba2,
                other => return Err(err(n, format!("unknown family `{other}` (expected mamba1 or mamba2)"))),
            }
        }
        _ => return Err(err(n, "expected header `quamba-ir <version> <family>`".into())),
    };
    let mut graph = Graph::new(family);
    let mut values: HashMap<String, ValueId> = HashMap::new();
    let mut returned = false;

    for (n, line) in lines {
        if returned {
            return Err(err(n, "text after `return`".into()));
        }
        if let Some(rest) = line.strip_prefix("weight ") {
            let decl = parse_weight(rest, graph.weights().len()).map_err(|m| err(n, m))?;
            graph.add_weight(decl);
        } else if let Some(rest) = line.strip_prefix("return") {
            for name in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let v = *values.get(name).ok_or_else(|| err(n, format!("unknown value `{name}`")))?;
                graph.add_output(v);
            }
            returned = true;
        } else {
            let (lhs, rhs) = line.split_once('=').ok_or_else(|| err(n, "expected `%N = op ...`".into()))?;
            let name = lhs.trim();
            if !name.starts_with('%') || values.contains_key(name) {
                return Err(err(n, format!("`{name}` is not a fresh value name")));
            }
            let (body, ty) = rhs.rsplit_once(" : ").ok_or_else(|| err(n, "expected ` : type` at the end".into()))?;
            let ty = parse_type(ty.trim()).map_err(|m| err(n, m))?;
            let mut words = body.split_whitespace();
            let op_name = words.next().ok_or_else(|| err(n, "missing op name".into()))?;
            let mut inputs = Vec::new();
            let mut attrs = Vec::new();
            for word in words {
                if word.starts_with('%') {
                    inputs.push(*values.get(word).ok_or_else(|| err(n, format!("unknown value `{word}` (values must be defined before use)")))?);
                } else {
                    let (k, v) = word.split_once('=').ok_or_else(|| err(n, format!("expected `key=value`, got `{word}`")))?;
                    attrs.push((k.to_string(), parse_attr(v).map_err(|m| err(n, m))?));
                }
            }
            let op = Op::from_parts(op_name, &attrs).map_err(|m| err(n, m))?;
            let id = graph.add_typed(op, ty, &inputs);
            values.insert(name.to_string(), id);
        }
    }
    if !returned {
        return Err(err(text.lines().count(), "missing `return` line".into()));
    }
    Ok(graph)
}

fn parse_weight(rest: &str, next_index: usize) -> Result<WeightDecl, String> {
    let (id, rest) = rest.split_once(' ').ok_or("expected `weight @N \"name\" type`")?;
    if id != format!("@{next_index}") {
        return Err(format!("weights must be numbered in order: expected @{next_index}, got {id}"));
    }
    let rest = rest.trim();
    let (name, after) = rest.strip_prefix('"').and_then(|quoted| quoted.split_once('"')).ok_or("weight name must be quoted")?;
    let name = name.to_string();
    let (dtype, dims) = split_type(after.trim())?;
    let shape = dims
        .iter()
        .map(|d| d.parse::<usize>().map_err(|_| format!("weight dimension `{d}` is not a number")))
        .collect::<Result<_, _>>()?;
    Ok(WeightDecl { name, dtype, shape })
}

fn split_type(text: &str) -> Result<(DType, Vec<String>), String> {
    let open = text.find('[').ok_or_else(|| format!("expected `dtype[dims]`, got `{text}`"))?;
    let dtype = DType::from_name(&text[..open]).ok_or_else(|| format!("unknown dtype `{}`", &text[..open]))?;
    let inner = text[open + 1..].strip_suffix(']').ok_or_else(|| format!("unclosed `[` in `{text}`"))?;
    let dims = inner.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect();
    Ok((dtype, dims))
}

fn parse_type(text: &str) -> Result<TensorType, String> {
    let (dtype, dims) = split_type(text)?;
    let dims = dims
        .iter()
        .map(|d| match d.as_str() {
            "B" => Ok(Dim::Batch),
            "L" => Ok(Dim::Seq),
            n => n.parse().map(Dim::Fixed).map_err(|_| format!("bad dimension `{n}`")),
        })
        .collect::<Result<_, _>>()?;
    Ok(TensorType { dtype, dims })
}

fn parse_attr(text: &str) -> Result<Attr, String> {
    if let Some(w) = text.strip_prefix('@') {
        return w.parse().map(|i| Attr::Weight(WeightId::new(i))).map_err(|_| format!("bad weight reference `{text}`"));
    }
    if let Ok(n) = text.parse::<usize>() {
        return Ok(Attr::Int(n));
    }
    if let Ok(x) = text.parse::<f32>() {
        return Ok(Attr::Float(x));
    }
    if text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !text.is_empty() {
        return Ok(Attr::Word(text.to_string()));
    }
    Err(format!("cannot read attribute value `{text}`"))
}
