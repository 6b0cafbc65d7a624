//! Element types and symbolic shapes of IR values and weights.

use std::fmt;

/// Element type of a value or a stored weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer (token ids).
    I64,
    /// 32-bit signed integer (accumulators, group ranges).
    I32,
    /// 8-bit signed integer (quantized activations and weights).
    I8,
    /// 4-bit signed integer in [-8, 7] (quantized weights; packed two per byte in artifacts).
    I4,
}

impl DType {
    /// Every dtype, in the order the text form lists them.
    pub const ALL: [DType; 7] = [DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I8, DType::I4];

    /// The name used in the text form (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::I4 => "i4",
        }
    }

    /// Parses a text-form dtype name.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element (an i4 element takes one byte unpacked; artifacts pack two per byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::I8 | DType::I4 => 1,
        }
    }

    /// Bits per element as stored in an artifact.
    pub fn bits(self) -> usize {
        match self {
            DType::I4 => 4,
            other => other.size_bytes() * 8,
        }
    }

    /// Whether this is a quantized integer weight type (i8 or i4).
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::I8 | DType::I4)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a value's shape. Batch and sequence length are symbolic so that a single
/// graph serves prefill (any length) and decode (length 1) at any batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// The batch size, printed `B`.
    Batch,
    /// The sequence length, printed `L`.
    Seq,
    /// A size fixed by the model.
    Fixed(usize),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("B"),
            Dim::Seq => f.write_str("L"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// The type of an IR value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub dims: Vec<Dim>,
}

impl TensorType {
    /// A `[B, L, width]` activation of the given dtype, the shape of nearly every value in a Mamba graph.
    pub fn sequence(dtype: DType, width: usize) -> TensorType {
        TensorType { dtype, dims: vec![Dim::Batch, Dim::Seq, Dim::Fixed(width)] }
    }

    /// The size of the last (feature) axis, if it is fixed.
    pub fn width(&self) -> Option<usize> {
        match self.dims.last() {
            Some(Dim::Fixed(n)) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
