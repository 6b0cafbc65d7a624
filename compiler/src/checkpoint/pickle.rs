//! A restricted unpickler for the `data.pkl` that `torch.save` writes into a PyTorch zip archive.
//!
//! # Security model
//!
//! A pickle is not data: it is a program for a small stack machine whose `GLOBAL` /
//! `STACK_GLOBAL` opcodes import any attribute of any module and whose `REDUCE` / `BUILD` /
//! `NEWOBJ` opcodes call it. Python's own unpickler therefore runs arbitrary code
//! (`os.system`, `builtins.eval`, ...) for whoever wrote the file. Checkpoints are downloaded
//! from the internet, so this module never imports, looks up or calls anything a file names:
//!
//! - a global is resolved by *exact* `(module, name)` match against a fixed allow-list
//!   (`resolve_global`) of the few PyTorch rebuild functions, storage classes and
//!   `collections.OrderedDict` that a state dict needs. Each allowed global becomes a tag of our
//!   own `Global` enum; anything else stops the machine at once with
//!   [`CheckpointError::ForbiddenGlobal`], before another opcode is read;
//! - "calling" an allowed global (`REDUCE`, `NEWOBJ`) runs our own Rust re-implementation of
//!   what that function does to its arguments (e.g. `_rebuild_tensor_v2` records a storage,
//!   offset, size and stride), after checking the argument types;
//! - `BUILD` (which would call `__setstate__`) only ever discards the state of a dict or tensor;
//! - persistent ids (`BINPERSID`) are only accepted as PyTorch's
//!   `('storage', storage_type, key, location, numel)` tuples and become a reference to a file
//!   of the archive; no storage bytes are read here.
//!
//! # Robustness
//!
//! Malformed input yields [`CheckpointError::Format`], never a panic: every read is bounds
//! checked, and a length field is compared with the bytes that remain before anything is sliced
//! or allocated, so no length can make us allocate more than the input holds. The machine is
//! iterative and containers live in an arena and refer to each other by index, so neither deep
//! nesting nor reference cycles (a list appended to itself through the memo) can recurse, loop
//! or overflow the native stack. Each opcode consumes at least one input byte and allocates only
//! in proportion to the bytes it read or the stack items it popped, so memory stays linear in the
//! size of the pickle; explicit caps on the stack and mark depth add defence in depth.
//!
//! # Supported opcodes
//!
//! The binary opcodes of protocols 2 to 5 that `torch.save` emits for a state dict: `PROTO`,
//! `FRAME`, `STOP`, `MARK`, `POP`, `POP_MARK`, `DUP`, `EMPTY_DICT`, `EMPTY_LIST`, `EMPTY_TUPLE`,
//! `TUPLE`, `TUPLE1/2/3`, `LIST`, `DICT`, `APPEND(S)`, `SETITEM(S)`, `BININT`, `BININT1`,
//! `BININT2`, `LONG1`, `LONG4` (values that fit an i64), `BINFLOAT`, `NONE`, `NEWTRUE`,
//! `NEWFALSE`, `BINUNICODE`, `SHORT_BINUNICODE`, `BINUNICODE8`, `BINBYTES`, `SHORT_BINBYTES`,
//! `BINBYTES8`, `BINPUT`, `LONG_BINPUT`, `MEMOIZE`, `BINGET`, `LONG_BINGET`, `GLOBAL`,
//! `STACK_GLOBAL`, `REDUCE`, `BUILD`, `NEWOBJ`, `BINPERSID`. Text-mode (protocol 0/1) opcodes,
//! sets, `NEWOBJ_EX`, `EXT*`, `INST`/`OBJ` and out-of-band buffers are refused as unsupported.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use ir::DType;

use super::CheckpointError;

/// At most this many values on the pickle stack; `torch.save` batches container items by 1000,
/// so a state dict keeps the stack a few thousand deep at most.
const MAX_STACK_LEN: usize = 1 << 20;

/// At most this many open `MARK`s; a state dict nests them about four deep.
const MAX_MARK_DEPTH: usize = 1 << 12;

/// The most arguments any allowed call takes (`_rebuild_tensor_v2` with metadata).
const MAX_CALL_ARGS: usize = 7;

/// The most dimensions a tensor may have: far above any weight, low enough to keep work bounded.
const MAX_RANK: usize = 64;

// -------------------------------------------------------------------------------------------------
// Public results
// -------------------------------------------------------------------------------------------------

/// Element type of a PyTorch storage, as named by the `torch.*Storage` class in the pickle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageDType {
    /// `torch.FloatStorage`.
    F32,
    /// `torch.HalfStorage`.
    F16,
    /// `torch.BFloat16Storage`.
    BF16,
    /// `torch.DoubleStorage` (recognised so that it can be refused by dtype, not as a global).
    F64,
    /// `torch.LongStorage`.
    I64,
    /// `torch.IntStorage`.
    I32,
    /// `torch.ShortStorage` (recognised, refused later by dtype).
    I16,
    /// `torch.CharStorage`.
    I8,
    /// `torch.ByteStorage` (recognised, refused later by dtype).
    U8,
    /// `torch.BoolStorage` (recognised, refused later by dtype).
    Bool,
}

impl StorageDType {
    /// The torch-style name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            StorageDType::F32 => "float32",
            StorageDType::F16 => "float16",
            StorageDType::BF16 => "bfloat16",
            StorageDType::F64 => "float64",
            StorageDType::I64 => "int64",
            StorageDType::I32 => "int32",
            StorageDType::I16 => "int16",
            StorageDType::I8 => "int8",
            StorageDType::U8 => "uint8",
            StorageDType::Bool => "bool",
        }
    }

    /// Bytes per element in the storage file.
    pub fn size_bytes(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }

    /// The IR dtype this storage loads as, or `None` for the types the compiler does not take.
    pub fn to_ir(self) -> Option<DType> {
        match self {
            StorageDType::F32 => Some(DType::F32),
            StorageDType::F16 => Some(DType::F16),
            StorageDType::BF16 => Some(DType::BF16),
            StorageDType::I64 => Some(DType::I64),
            StorageDType::I32 => Some(DType::I32),
            StorageDType::I8 => Some(DType::I8),
            StorageDType::F64 | StorageDType::I16 | StorageDType::U8 | StorageDType::Bool => None,
        }
    }
}

/// A storage named by a persistent id: its bytes live in the archive member `<prefix>/data/<key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    /// Element type, from the storage class.
    pub dtype: StorageDType,
    /// Archive member name under `data/`.
    pub key: String,
    /// Number of elements the pickle claims the storage has.
    pub numel: u64,
}

/// A tensor as described by `_rebuild_tensor_v2`: a strided view of a storage (in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage viewed.
    pub storage: StorageRef,
    /// Index of the tensor's first element within the storage.
    pub storage_offset: usize,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Stride of each dimension, in elements.
    pub stride: Vec<usize>,
}

/// Runs the restricted unpickler over `pickle` and returns the state dict it describes: the
/// tensors of a top-level `dict` / `OrderedDict` mapping names to tensors, in dict order.
///
/// `path` is the file reported in errors. Any global outside the allow-list yields
/// [`CheckpointError::ForbiddenGlobal`]; anything malformed or not a flat dict of tensors yields
/// [`CheckpointError::Format`].
pub fn read_state_dict(pickle: &[u8], path: &Path) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
    let mut machine = Machine::new(pickle);
    let result = machine.run().map_err(|fault| machine.error(fault, path))?;
    machine.state_dict_entries(&result).map_err(|detail| CheckpointError::Format { path: path.to_path_buf(), detail })
}

// -------------------------------------------------------------------------------------------------
// The allow-list
// -------------------------------------------------------------------------------------------------

/// The globals a pickle may name. Each is a tag: nothing is imported, and "calling" one runs our
/// own code in [`Machine::call`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)` (older archives).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`: an `nn.Parameter`.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state)`.
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2(func, new_type, args, state)`: tensor subclasses.
    RebuildFromTypeV2,
    /// `collections.OrderedDict`: the type of `Module.state_dict()`.
    OrderedDict,
    /// `torch.Tensor` / `torch.nn.parameter.Parameter`: only a type tag for `_rebuild_from_type_v2`.
    TensorType,
    /// A `torch.*Storage` class: only a dtype tag inside a persistent id.
    Storage(StorageDType),
}

/// Resolves `module.name` against the allow-list, by exact match only.
fn resolve_global(module: &str, name: &str) -> Option<Global> {
    let global = match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch", "Tensor") | ("torch._tensor", "Tensor") | ("torch.nn.parameter", "Parameter") => Global::TensorType,
        ("torch", storage) => Global::Storage(storage_dtype(storage)?),
        _ => return None,
    };
    Some(global)
}

/// The dtype of a `torch.<class>` storage class, for the classes `torch.save` emits.
fn storage_dtype(class: &str) -> Option<StorageDType> {
    Some(match class {
        "FloatStorage" => StorageDType::F32,
        "HalfStorage" => StorageDType::F16,
        "BFloat16Storage" => StorageDType::BF16,
        "DoubleStorage" => StorageDType::F64,
        "LongStorage" => StorageDType::I64,
        "IntStorage" => StorageDType::I32,
        "ShortStorage" => StorageDType::I16,
        "CharStorage" => StorageDType::I8,
        "ByteStorage" => StorageDType::U8,
        "BoolStorage" => StorageDType::Bool,
        _ => return None,
    })
}

// -------------------------------------------------------------------------------------------------
// Values
// -------------------------------------------------------------------------------------------------

/// Index of a container in the machine's arena.
type ObjId = usize;

/// A value on the pickle stack or in the memo. Containers are arena indices, so cloning a value
/// is cheap, aliasing through the memo behaves like Python's (mutations are shared), and no value
/// owns another: dropping never recurses.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Kept for `Debug` output only: no allowed call takes a float.
    #[allow(dead_code)]
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(ObjId),
    List(ObjId),
    Dict(ObjId),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// The Python-ish type name, for error messages.
    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// A hashable dict key. Python allows more key types, but a state dict only uses strings (and
/// its `_metadata` strings and ints).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DictKey {
    None,
    Int(i64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
}

/// An insertion-ordered dict, like Python's: re-setting a key keeps its first position.
#[derive(Debug, Default)]
struct PyDict {
    entries: Vec<(DictKey, Value)>,
    index: HashMap<DictKey, usize>,
}

impl PyDict {
    fn insert(&mut self, key: DictKey, value: Value) {
        match self.index.get(&key) {
            Some(&slot) => {
                if let Some(entry) = self.entries.get_mut(slot) {
                    entry.1 = value;
                }
            }
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }
}

/// Why the machine stopped early. Turned into a [`CheckpointError`] with the file and byte offset.
#[derive(Debug)]
enum Fault {
    /// Malformed or unsupported input.
    Format(String),
    /// A global outside the allow-list.
    Forbidden { module: String, name: String },
}

type Step<T> = Result<T, Fault>;

/// Shorthand for a [`Fault::Format`].
fn malformed<T>(detail: impl Into<String>) -> Step<T> {
    Err(Fault::Format(detail.into()))
}

// -------------------------------------------------------------------------------------------------
// Input
// -------------------------------------------------------------------------------------------------

/// A bounds-checked cursor over the pickle bytes.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `len` bytes. The length is checked against what remains before slicing, so a
    /// huge length field costs nothing.
    fn take(&mut self, len: usize) -> Step<&'a [u8]> {
        let remaining = self.data.len().saturating_sub(self.pos);
        if len > remaining {
            return malformed(format!("needs {len} bytes but only {remaining} remain (truncated or corrupt)"));
        }
        let end = self.pos + len;
        match self.data.get(self.pos..end) {
            Some(bytes) => {
                self.pos = end;
                Ok(bytes)
            }
            None => malformed("read past the end"),
        }
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16_le(&mut self) -> Step<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32_le(&mut self) -> Step<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32_le(&mut self) -> Step<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64_le(&mut self) -> Step<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length from a u64 field, which must fit in memory addressing at all.
    fn len_u64(&mut self) -> Step<usize> {
        let len = self.u64_le()?;
        usize::try_from(len).or_else(|_| malformed(format!("length {len} does not fit this platform")))
    }

    /// A `\n`-terminated line (the text arguments of `GLOBAL`), without the newline.
    fn line(&mut self) -> Step<&'a [u8]> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        match rest.iter().position(|&b| b == b'\n') {
            Some(len) => {
                let line = self.take(len)?;
                self.take(1)?;
                Ok(line)
            }
            None => malformed("unterminated line (truncated)"),
        }
    }
}

/// Decodes UTF-8 text from the pickle.
fn utf8(bytes: &[u8]) -> Step<&str> {
    std::str::from_utf8(bytes).or_else(|e| malformed(format!("invalid UTF-8 in string: {e}")))
}

/// Decodes a little-endian two's-complement integer of `LONG1`/`LONG4`, if it fits an i64.
fn decode_long(bytes: &[u8]) -> Step<i64> {
    if bytes.len() > 8 {
        return malformed(format!("{}-byte integer does not fit 64 bits", bytes.len()));
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = *src;
    }
    Ok(i64::from_le_bytes(buf))
}

// -------------------------------------------------------------------------------------------------
// The machine
// -------------------------------------------------------------------------------------------------

/// Opcode bytes, named as in CPython's `pickletools`.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const LIST: u8 = b'l';
    pub const DICT: u8 = b'd';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINFLOAT: u8 = b'G';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES8: u8 = 0x8e;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    pub const NEWOBJ: u8 = 0x81;
    pub const BINPERSID: u8 = b'Q';
}

/// The unpickler state: stack, mark positions, memo and the container arena.
struct Machine<'a> {
    input: Reader<'a>,
    /// Offset of the opcode being executed, for error messages.
    opcode_offset: usize,
    /// The opcode being executed, for error messages.
    opcode: u8,
    stack: Vec<Value>,
    /// Stack lengths at each open `MARK` (CPython's metastack, flattened).
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Tuples and lists, indexed by [`ObjId`].
    sequences: Vec<Vec<Value>>,
    /// Dicts, indexed by [`ObjId`].
    dicts: Vec<PyDict>,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Machine {
            input: Reader { data, pos: 0 },
            opcode_offset: 0,
            opcode: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            sequences: Vec::new(),
            dicts: Vec::new(),
        }
    }

    /// Turns a fault into the public error, naming the file and where in the pickle it stopped.
    fn error(&self, fault: Fault, path: &Path) -> CheckpointError {
        match fault {
            Fault::Forbidden { module, name } => CheckpointError::ForbiddenGlobal { path: path.to_path_buf(), module, name },
            Fault::Format(detail) => CheckpointError::Format {
                path: path.to_path_buf(),
                detail: format!("pickle opcode 0x{:02x} at byte {}: {detail}", self.opcode, self.opcode_offset),
            },
        }
    }

    /// Executes opcodes until `STOP` and returns the value it pops.
    fn run(&mut self) -> Step<Value> {
        loop {
            self.opcode_offset = self.input.pos;
            self.opcode = self.input.u8().or_else(|_| malformed("pickle ended without STOP (truncated)"))?;
            if self.opcode == op::STOP {
                return self.pop();
            }
            self.step(self.opcode)?;
        }
    }

    /// Executes one opcode other than `STOP`.
    fn step(&mut self, opcode: u8) -> Step<()> {
        match opcode {
            op::PROTO => self.check_protocol(),
            op::FRAME => self.input.u64_le().map(drop), // Framing is only a read-ahead hint.
            op::MARK => self.mark(),
            op::POP => self.pop().map(drop),
            op::POP_MARK => self.pop_mark().map(drop),
            op::DUP => self.dup(),
            op::EMPTY_DICT => self.push_dict(PyDict::default()),
            op::EMPTY_LIST => self.push_sequence(Vec::new(), Value::List),
            op::EMPTY_TUPLE => self.push_sequence(Vec::new(), Value::Tuple),
            op::TUPLE => self.pop_mark().and_then(|items| self.push_sequence(items, Value::Tuple)),
            op::TUPLE1 => self.pop_n(1).and_then(|items| self.push_sequence(items, Value::Tuple)),
            op::TUPLE2 => self.pop_n(2).and_then(|items| self.push_sequence(items, Value::Tuple)),
            op::TUPLE3 => self.pop_n(3).and_then(|items| self.push_sequence(items, Value::Tuple)),
            op::LIST => self.pop_mark().and_then(|items| self.push_sequence(items, Value::List)),
            op::DICT => self.dict_from_mark(),
            op::APPEND => self.pop_n(1).and_then(|items| self.extend_list(items)),
            op::APPENDS => self.pop_mark().and_then(|items| self.extend_list(items)),
            op::SETITEM => self.pop_n(2).and_then(|items| self.set_items(items)),
            op::SETITEMS => self.pop_mark().and_then(|items| self.set_items(items)),
            op::BININT => self.input.i32_le().and_then(|v| self.push(Value::Int(v.into()))),
            op::BININT1 => self.input.u8().and_then(|v| self.push(Value::Int(v.into()))),
            op::BININT2 => self.input.u16_le().and_then(|v| self.push(Value::Int(v.into()))),
            op::LONG1 => self.long(|input| input.u8().map(usize::from)),
            op::LONG4 => self.long(|input| input.u32_le().map(|n| n as usize)),
            op::BINFLOAT => self.input.array().and_then(|b| self.push(Value::Float(f64::from_be_bytes(b)))),
            op::NONE => self.push(Value::None),
            op::NEWTRUE => self.push(Value::Bool(true)),
            op::NEWFALSE => self.push(Value::Bool(false)),
            op::SHORT_BINUNICODE => self.input.u8().and_then(|n| self.string(n.into())),
            op::BINUNICODE => self.input.u32_le().and_then(|n| self.string(n as usize)),
            op::BINUNICODE8 => self.input.len_u64().and_then(|n| self.string(n)),
            op::SHORT_BINBYTES => self.input.u8().and_then(|n| self.bytes(n.into())),
            op::BINBYTES => self.input.u32_le().and_then(|n| self.bytes(n as usize)),
            op::BINBYTES8 => self.input.len_u64().and_then(|n| self.bytes(n)),
            op::BINPUT => self.input.u8().and_then(|i| self.memo_put(i.into())),
            op::LONG_BINPUT => self.input.u32_le().and_then(|i| self.memo_put(i)),
            op::MEMOIZE => self.memoize(),
            op::BINGET => self.input.u8().and_then(|i| self.memo_get(i.into())),
            op::LONG_BINGET => self.input.u32_le().and_then(|i| self.memo_get(i)),
            op::GLOBAL => self.global_from_lines(),
            op::STACK_GLOBAL => self.global_from_stack(),
            op::REDUCE => self.reduce(),
            op::BUILD => self.build(),
            op::NEWOBJ => self.new_object(),
            op::BINPERSID => self.persistent_id(),
            other => malformed(format!("unsupported pickle opcode 0x{other:02x} (not used by torch.save state dicts)")),
        }
    }

    // --- stack ---------------------------------------------------------------------------------

    fn push(&mut self, value: Value) -> Step<()> {
        if self.stack.len() >= MAX_STACK_LEN {
            return malformed(format!("pickle stack exceeds {MAX_STACK_LEN} values"));
        }
        self.stack.push(value);
        Ok(())
    }

    /// Stack length at the innermost open mark: items below it may not be popped singly.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Step<Value> {
        if self.stack.len() <= self.floor() {
            return malformed("stack underflow");
        }
        self.stack.pop().map_or_else(|| malformed("stack underflow"), Ok)
    }

    /// Pops the top `n` values, in stack order (deepest first).
    fn pop_n(&mut self, n: usize) -> Step<Vec<Value>> {
        let available = self.stack.len().saturating_sub(self.floor());
        if available < n {
            return malformed(format!("stack underflow: needs {n} values, has {available}"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    /// The top of the stack (the target of `APPEND`, `SETITEM`, `BUILD`), above the innermost mark.
    fn top(&self) -> Step<&Value> {
        if self.stack.len() <= self.floor() {
            return malformed("stack underflow");
        }
        self.stack.last().map_or_else(|| malformed("stack underflow"), Ok)
    }

    fn mark(&mut self) -> Step<()> {
        if self.marks.len() >= MAX_MARK_DEPTH {
            return malformed(format!("more than {MAX_MARK_DEPTH} nested MARKs"));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// Pops everything above the innermost mark, and the mark.
    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let Some(at) = self.marks.pop() else {
            return malformed("no MARK to pop to");
        };
        if at > self.stack.len() {
            return malformed("MARK above the stack top");
        }
        Ok(self.stack.split_off(at))
    }

    fn dup(&mut self) -> Step<()> {
        let top = self.top()?.clone();
        self.push(top)
    }

    // --- scalars -------------------------------------------------------------------------------

    fn check_protocol(&mut self) -> Step<()> {
        match self.input.u8()? {
            2..=5 => Ok(()),
            other => malformed(format!("pickle protocol {other} is not supported (expected 2 to 5)")),
        }
    }

    /// `LONG1` / `LONG4`: a length (read by `read_len`) then that many integer bytes.
    fn long(&mut self, read_len: impl FnOnce(&mut Reader<'a>) -> Step<usize>) -> Step<()> {
        let len = read_len(&mut self.input)?;
        let bytes = self.input.take(len)?;
        let value = decode_long(bytes)?;
        self.push(Value::Int(value))
    }

    fn string(&mut self, len: usize) -> Step<()> {
        let text = utf8(self.input.take(len)?)?;
        self.push(Value::Str(Rc::from(text)))
    }

    fn bytes(&mut self, len: usize) -> Step<()> {
        let bytes = self.input.take(len)?;
        self.push(Value::Bytes(Rc::from(bytes)))
    }

    // --- containers ----------------------------------------------------------------------------

    /// Moves `items` into the arena and pushes a `Tuple` or `List` (chosen by `kind`) naming it.
    fn push_sequence(&mut self, items: Vec<Value>, kind: fn(ObjId) -> Value) -> Step<()> {
        self.sequences.push(items);
        self.push(kind(self.sequences.len() - 1))
    }

    fn push_dict(&mut self, dict: PyDict) -> Step<()> {
        self.dicts.push(dict);
        self.push(Value::Dict(self.dicts.len() - 1))
    }

    fn dict_from_mark(&mut self) -> Step<()> {
        let items = self.pop_mark()?;
        let mut dict = PyDict::default();
        insert_pairs(&mut dict, items)?;
        self.push_dict(dict)
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Step<()> {
        let Value::List(id) = *self.top()? else {
            return malformed(format!("APPEND to a {}, expected a list", self.top()?.type_name()));
        };
        match self.sequences.get_mut(id) {
            Some(list) => {
                list.extend(items);
                Ok(())
            }
            None => malformed("dangling list reference"),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Step<()> {
        let Value::Dict(id) = *self.top()? else {
            return malformed(format!("SETITEM on a {}, expected a dict", self.top()?.type_name()));
        };
        match self.dicts.get_mut(id) {
            Some(dict) => insert_pairs(dict, items),
            None => malformed("dangling dict reference"),
        }
    }

    /// The items of the tuple `value`, or a format error naming `what` was expected.
    fn tuple_items(&self, value: &Value, what: &str) -> Step<&[Value]> {
        match value {
            Value::Tuple(id) => self.sequences.get(*id).map_or_else(|| malformed("dangling tuple reference"), |t| Ok(t.as_slice())),
            other => malformed(format!("{what} is a {}, expected a tuple", other.type_name())),
        }
    }

    /// A copy of the arguments of a call. Refusing long tuples before copying them keeps a
    /// pickle from making us copy one huge tuple again and again (no allowed call takes more
    /// than [`MAX_CALL_ARGS`] arguments).
    fn call_args(&self, value: &Value, what: &str) -> Step<Vec<Value>> {
        let items = self.tuple_items(value, what)?;
        if items.len() > MAX_CALL_ARGS {
            return malformed(format!("{what} has {} items; no allowed call takes more than {MAX_CALL_ARGS}", items.len()));
        }
        Ok(items.to_vec())
    }

    // --- memo ----------------------------------------------------------------------------------

    fn memo_put(&mut self, index: u32) -> Step<()> {
        let top = self.top()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn memoize(&mut self) -> Step<()> {
        let index = u32::try_from(self.memo.len()).or_else(|_| malformed("memo is full"))?;
        self.memo_put(index)
    }

    fn memo_get(&mut self, index: u32) -> Step<()> {
        match self.memo.get(&index) {
            Some(value) => self.push(value.clone()),
            None => malformed(format!("memo entry {index} was never stored")),
        }
    }

    // --- globals and calls ---------------------------------------------------------------------

    /// `GLOBAL`: module and name as two text lines.
    fn global_from_lines(&mut self) -> Step<()> {
        let module = utf8(self.input.line()?)?;
        let name = utf8(self.input.line()?)?;
        let global = allowed_global(module, name)?;
        self.push(Value::Global(global))
    }

    /// `STACK_GLOBAL`: module and name as the two strings on top of the stack.
    fn global_from_stack(&mut self) -> Step<()> {
        let name = self.pop()?;
        let module = self.pop()?;
        let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
            return malformed(format!("STACK_GLOBAL needs two strings, got {} and {}", module.type_name(), name.type_name()));
        };
        let global = allowed_global(module, name)?;
        self.push(Value::Global(global))
    }

    /// `REDUCE`: `callable(*args)`, where the callable can only be an allow-listed global.
    fn reduce(&mut self) -> Step<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Value::Global(global) = callable else {
            return malformed(format!("REDUCE on a {}, expected an allowed global", callable.type_name()));
        };
        let args = self.call_args(&args, "REDUCE arguments")?;
        let result = self.call(global, &args)?;
        self.push(result)
    }

    /// `NEWOBJ`: `cls.__new__(cls, *args)`; only `OrderedDict()` is meaningful in a state dict.
    fn new_object(&mut self) -> Step<()> {
        let args = self.pop()?;
        let class = self.pop()?;
        let no_args = self.tuple_items(&args, "NEWOBJ arguments")?.is_empty();
        match class {
            Value::Global(Global::OrderedDict) if no_args => self.push_dict(PyDict::default()),
            other => malformed(format!("NEWOBJ of a {} is not supported (only OrderedDict())", other.type_name())),
        }
    }

    /// `BUILD`: would call `__setstate__`. The state of a dict (a state dict's `_metadata`) or of
    /// a tensor carries nothing we need, so it is dropped; nothing else may be built.
    fn build(&mut self) -> Step<()> {
        let _state = self.pop()?;
        match self.top()? {
            Value::Dict(_) | Value::Tensor(_) => Ok(()),
            other => malformed(format!("BUILD on a {} is not supported", other.type_name())),
        }
    }

    /// Our own implementation of calling an allowed global with `args`.
    fn call(&mut self, global: Global, args: &[Value]) -> Step<Value> {
        match (global, args) {
            (Global::OrderedDict, []) => {
                self.dicts.push(PyDict::default());
                Ok(Value::Dict(self.dicts.len() - 1))
            }
            // The ignored arguments are requires_grad, backward hooks, metadata and state: none
            // changes the values of the tensor.
            (Global::RebuildTensorV2, [storage, offset, size, stride, _, _])
            | (Global::RebuildTensorV2, [storage, offset, size, stride, _, _, _])
            | (Global::RebuildTensor, [storage, offset, size, stride]) => self.rebuild_tensor(storage, offset, size, stride),
            (Global::RebuildParameter, [tensor @ Value::Tensor(_), _, _])
            | (Global::RebuildParameterWithState, [tensor @ Value::Tensor(_), _, _, _]) => Ok(tensor.clone()),
            (Global::RebuildFromTypeV2, [Value::Global(func), Value::Global(Global::TensorType), inner_args, _]) => {
                self.rebuild_from_type(*func, inner_args)
            }
            (global, args) => {
                malformed(format!("cannot call {global:?} with {} argument(s) of these types: {}", args.len(), type_names(args)))
            }
        }
    }

    /// `_rebuild_from_type_v2(func, Tensor|Parameter, args, state)`: `func(*args)` as a plain
    /// tensor. `func` must itself be a tensor rebuild, which also bounds the nesting to one level.
    fn rebuild_from_type(&mut self, func: Global, args: &Value) -> Step<Value> {
        let allowed = matches!(func, Global::RebuildTensorV2 | Global::RebuildTensor | Global::RebuildParameter);
        if !allowed {
            return malformed(format!("_rebuild_from_type_v2 of {func:?} is not supported"));
        }
        let args = self.call_args(args, "_rebuild_from_type_v2 arguments")?;
        self.call(func, &args)
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, storage: &Value, offset: &Value, size: &Value, stride: &Value) -> Step<Value> {
        let Value::Storage(storage) = storage else {
            return malformed(format!("tensor storage is a {}, expected a persistent storage", storage.type_name()));
        };
        let storage_offset = non_negative(offset, "storage offset")?;
        let shape = self.usize_tuple(size, "tensor size")?;
        let stride = self.usize_tuple(stride, "tensor stride")?;
        if shape.len() != stride.len() {
            return malformed(format!("tensor size {shape:?} and stride {stride:?} differ in rank"));
        }
        let storage = StorageRef::clone(storage);
        Ok(Value::Tensor(Rc::new(TensorRef { storage, storage_offset, shape, stride })))
    }

    /// A tuple of non-negative ints (a size or stride) of at most [`MAX_RANK`] items.
    fn usize_tuple(&self, value: &Value, what: &str) -> Step<Vec<usize>> {
        let items = self.tuple_items(value, what)?;
        if items.len() > MAX_RANK {
            return malformed(format!("{what} has {} dimensions, more than {MAX_RANK}", items.len()));
        }
        items.iter().map(|item| non_negative(item, what)).collect()
    }

    /// `BINPERSID`: PyTorch's `('storage', storage_type, key, location, numel)`.
    fn persistent_id(&mut self) -> Step<()> {
        let pid = self.pop()?;
        let storage = match self.tuple_items(&pid, "persistent id")? {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), key, _location, numel] if &**tag == "storage" => {
                StorageRef { dtype: *dtype, key: storage_key(key)?, numel: non_negative(numel, "storage numel")? as u64 }
            }
            other => {
                return malformed(format!(
                    "persistent id ({}) is not ('storage', torch.<Type>Storage, key, location, numel)",
                    type_names(other)
                ))
            }
        };
        self.push(Value::Storage(Rc::new(storage)))
    }

    // --- result --------------------------------------------------------------------------------

    /// The `(name, tensor)` entries of the unpickled top-level dict, which must map strings to
    /// tensors.
    fn state_dict_entries(&self, result: &Value) -> Result<Vec<(String, TensorRef)>, String> {
        let dict = match result {
            Value::Dict(id) => self.dicts.get(*id).ok_or("dangling dict reference")?,
            other => return Err(format!("the pickle holds a {}, expected a dict of tensors (a state dict)", other.type_name())),
        };
        dict.entries.iter().map(|(key, value)| state_dict_entry(key, value)).collect()
    }
}

/// One state-dict entry: a string name and a tensor.
fn state_dict_entry(key: &DictKey, value: &Value) -> Result<(String, TensorRef), String> {
    let DictKey::Str(name) = key else {
        return Err(format!("state dict key {key:?} is not a string"));
    };
    match value {
        Value::Tensor(tensor) => Ok((name.to_string(), TensorRef::clone(tensor))),
        Value::Dict(_) => Err(format!(
            "state dict entry `{name}` is a nested dict: only a flat dict of tensors is supported \
             (checkpoints like {{'model': {{...}}}} must be re-saved as the inner state dict)"
        )),
        other => Err(format!("state dict entry `{name}` is a {}, expected a tensor", other.type_name())),
    }
}

/// Resolves a global or stops with [`Fault::Forbidden`].
fn allowed_global(module: &str, name: &str) -> Step<Global> {
    resolve_global(module, name).ok_or_else(|| Fault::Forbidden { module: module.to_string(), name: name.to_string() })
}

/// Inserts `[k0, v0, k1, v1, ...]` into `dict`.
fn insert_pairs(dict: &mut PyDict, items: Vec<Value>) -> Step<()> {
    if items.len() & 1 == 1 {
        return malformed(format!("dict items come in pairs, got {} values", items.len()));
    }
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        dict.insert(dict_key(key)?, value);
    }
    Ok(())
}

/// Converts a value to a dict key; Python's `True`/`False` hash as `1`/`0`.
fn dict_key(value: Value) -> Step<DictKey> {
    Ok(match value {
        Value::None => DictKey::None,
        Value::Bool(b) => DictKey::Int(b.into()),
        Value::Int(i) => DictKey::Int(i),
        Value::Str(s) => DictKey::Str(s),
        Value::Bytes(b) => DictKey::Bytes(b),
        other => return malformed(format!("unsupported dict key type {}", other.type_name())),
    })
}

/// A non-negative int that fits a usize.
fn non_negative(value: &Value, what: &str) -> Step<usize> {
    match value {
        Value::Int(i) => usize::try_from(*i).or_else(|_| malformed(format!("{what} {i} is negative or too large"))),
        other => malformed(format!("{what} is a {}, expected an int", other.type_name())),
    }
}

/// A storage key: a string in zip archives (ints appear in some writers; accepted as text).
fn storage_key(value: &Value) -> Step<String> {
    match value {
        Value::Str(s) => Ok(s.to_string()),
        Value::Int(i) => Ok(i.to_string()),
        other => malformed(format!("storage key is a {}, expected a string", other.type_name())),
    }
}

/// Comma-separated type names, for error messages.
fn type_names(values: &[Value]) -> String {
    values.iter().map(Value::type_name).collect::<Vec<_>>().join(", ")
}

// -------------------------------------------------------------------------------------------------
// Test support: a tiny pickle writer, shared with the torch_zip tests.
// -------------------------------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod test_pickles {
    //! Builds pickles the way `torch.save` lays them out (protocol 2, `GLOBAL`, `BINPUT` memo).

    /// One tensor entry of a hand-made state dict.
    pub(crate) struct Entry<'a> {
        pub name: &'a str,
        /// `torch.<storage_class>`, e.g. `FloatStorage`.
        pub storage_class: &'a str,
        pub key: &'a str,
        pub numel: i32,
        pub offset: i32,
        pub shape: &'a [i32],
        pub stride: &'a [i32],
    }

    /// Appends raw opcodes and arguments.
    #[derive(Default)]
    pub(crate) struct Writer {
        pub bytes: Vec<u8>,
    }

    impl Writer {
        pub fn op(&mut self, op: u8) -> &mut Self {
            self.bytes.push(op);
            self
        }
        pub fn str(&mut self, s: &str) -> &mut Self {
            self.bytes.push(b'X');
            self.bytes.extend((s.len() as u32).to_le_bytes());
            self.bytes.extend(s.as_bytes());
            self
        }
        pub fn int(&mut self, i: i32) -> &mut Self {
            self.bytes.push(b'J');
            self.bytes.extend(i.to_le_bytes());
            self
        }
        pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.bytes.push(b'c');
            self.bytes.extend(format!("{module}\n{name}\n").as_bytes());
            self
        }
        pub fn int_tuple(&mut self, items: &[i32]) -> &mut Self {
            self.op(b'(');
            for &i in items {
                self.int(i);
            }
            self.op(b't')
        }
        pub fn put(&mut self, index: u8) -> &mut Self {
            self.bytes.extend([b'q', index]);
            self
        }
    }

    /// A protocol-2 pickle of `{name: _rebuild_tensor_v2(...), ...}` as torch.save writes it.
    pub(crate) fn state_dict(entries: &[Entry]) -> Vec<u8> {
        let mut w = Writer::default();
        w.op(0x80).op(2).op(b'}').put(0).op(b'(');
        for e in entries {
            w.str(e.name).global("torch._utils", "_rebuild_tensor_v2").op(b'(');
            w.op(b'(').str("storage").global("torch", e.storage_class).str(e.key).str("cuda:0").int(e.numel).op(b't');
            w.op(b'Q').int(e.offset).int_tuple(e.shape).int_tuple(e.stride).op(0x89);
            w.global("collections", "OrderedDict").op(b')').op(b'R');
            w.op(b't').op(b'R');
        }
        w.op(b'u').op(b'.');
        w.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::test_pickles::{state_dict, Entry, Writer};
    use super::*;

    fn run(bytes: &[u8]) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
        read_state_dict(bytes, Path::new("test.pkl"))
    }

    fn assert_forbidden(bytes: &[u8], module: &str, name: &str) {
        match run(bytes) {
            Err(CheckpointError::ForbiddenGlobal { path, module: m, name: n }) => {
                assert_eq!((m.as_str(), n.as_str()), (module, name));
                assert_eq!(path, Path::new("test.pkl"));
            }
            other => panic!("expected ForbiddenGlobal {module}.{name}, got {other:?}"),
        }
    }

    fn assert_format(bytes: &[u8]) -> String {
        match run(bytes) {
            Err(CheckpointError::Format { detail, .. }) => detail,
            other => panic!("expected a Format error, got {other:?}"),
        }
    }

    /// `GLOBAL module name` followed by an opcode stream that would fail if ever reached.
    fn global_then_garbage(module: &str, name: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.op(0x80).op(2).global(module, name).op(b'(').str("echo pwned").op(b't').op(b'R');
        w.op(0xff); // Unsupported opcode: reaching it would give Format, not ForbiddenGlobal.
        w.bytes
    }

    /// Protocol 4 with framing, `SHORT_BINUNICODE module`, `MEMOIZE`, `... name`, `STACK_GLOBAL`.
    fn stack_global_then_garbage(module: &str, name: &str) -> Vec<u8> {
        let mut b = vec![0x80, 4, 0x95];
        b.extend(64u64.to_le_bytes());
        for s in [module, name] {
            b.extend([0x8c, s.len() as u8]);
            b.extend(s.as_bytes());
            b.push(0x94);
        }
        b.extend([0x93, 0x94, 0xff]);
        b
    }

    #[test]
    fn os_system_is_refused_via_global_and_stack_global() {
        assert_forbidden(&global_then_garbage("os", "system"), "os", "system");
        assert_forbidden(&stack_global_then_garbage("os", "system"), "os", "system");
        assert_forbidden(&global_then_garbage("posix", "system"), "posix", "system");
    }

    #[test]
    fn builtins_eval_is_refused_via_global_and_stack_global() {
        assert_forbidden(&global_then_garbage("builtins", "eval"), "builtins", "eval");
        assert_forbidden(&stack_global_then_garbage("builtins", "eval"), "builtins", "eval");
        assert_forbidden(&stack_global_then_garbage("builtins", "exec"), "builtins", "exec");
    }

    #[test]
    fn allow_list_matches_exactly() {
        // Near misses of allowed names: other torch attributes, dotted tricks, suffixes.
        for (module, name) in [
            ("torch", "load"),
            ("torch", "os"),
            ("torch._utils", "_rebuild_tensor_v2.__globals__"),
            ("torch._utils ", "_rebuild_tensor_v2"),
            ("torch.serialization", "load"),
            ("collections", "OrderedDict\0"),
            ("torch", "Storage"),
            ("torch._utils", "_rebuild_qtensor"),
            ("__builtin__", "getattr"),
        ] {
            assert_forbidden(&global_then_garbage(module, name), module, name);
        }
        assert_eq!(resolve_global("torch", "FloatStorage"), Some(Global::Storage(StorageDType::F32)));
        assert_eq!(resolve_global("torch._utils", "_rebuild_tensor_v2"), Some(Global::RebuildTensorV2));
    }

    fn sample_entries() -> Vec<Entry<'static>> {
        vec![
            Entry { name: "a", storage_class: "FloatStorage", key: "0", numel: 6, offset: 0, shape: &[2, 3], stride: &[3, 1] },
            Entry { name: "a.t", storage_class: "FloatStorage", key: "0", numel: 6, offset: 0, shape: &[3, 2], stride: &[1, 3] },
            Entry { name: "h", storage_class: "HalfStorage", key: "1", numel: 4, offset: 1, shape: &[3], stride: &[1] },
        ]
    }

    #[test]
    fn reads_a_torch_style_state_dict_in_order() {
        let tensors = run(&state_dict(&sample_entries())).unwrap();
        let names: Vec<_> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "a.t", "h"]);
        let (_, transposed) = &tensors[1];
        assert_eq!(transposed.shape, [3, 2]);
        assert_eq!(transposed.stride, [1, 3]);
        assert_eq!(transposed.storage, StorageRef { dtype: StorageDType::F32, key: "0".into(), numel: 6 });
        assert_eq!(tensors[2].1.storage.dtype, StorageDType::F16);
        assert_eq!(tensors[2].1.storage_offset, 1);
    }

    #[test]
    fn every_truncation_is_a_format_error() {
        let bytes = state_dict(&sample_entries());
        for len in 0..bytes.len() {
            assert_format(&bytes[..len]);
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = state_dict(&sample_entries());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut corrupt = bytes.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % corrupt.len();
                corrupt[at] = (seed >> 32) as u8;
            }
            let _ = run(&corrupt); // Any result but a panic is fine.
        }
    }

    #[test]
    fn huge_length_fields_are_refused_without_allocating() {
        let mut b = vec![0x80, 4, 0x8d];
        b.extend(u64::MAX.to_le_bytes());
        assert!(assert_format(&b).contains("remain"));
        let mut b = vec![0x80, 2, b'X'];
        b.extend(u32::MAX.to_le_bytes());
        b.extend(b"abc");
        assert!(assert_format(&b).contains("remain"));
        let mut b = vec![0x80, 2, 0x8b];
        b.extend(u32::MAX.to_le_bytes());
        assert_format(&b);
    }

    #[test]
    fn deep_nesting_and_cycles_do_not_recurse() {
        // A million nested 1-tuples: would overflow a recursive drop.
        let mut b = vec![0x80, 2, b')'];
        b.resize(b.len() + 1_000_000, 0x85);
        b.push(b'.');
        assert!(assert_format(&b).contains("tuple"));
        // A list that contains itself through the memo.
        let b = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
        assert!(assert_format(&b).contains("list"));
    }

    #[test]
    fn stack_and_mark_abuse_is_a_format_error() {
        assert_format(&[0x80, 2, b'0', b'.']); // POP on empty stack
        assert_format(&[0x80, 2, b't', b'.']); // TUPLE without MARK
        assert_format(&[0x80, 2, b'N', b'(', 0x85, b'.']); // TUPLE1 across a mark
        assert_format(&[0x80, 2, b'h', 7, b'.']); // BINGET of an unset memo slot
        assert_format(&[0x80, 2, b'N', b'a', b'.']); // APPEND to None
        assert_format(&[0x80, 2, b'}', b'N', b'u', b'.']); // SETITEMS without MARK
        assert_format(&[0x80, 1, b'}', b'.']); // protocol 1
        let mut marks = vec![0x80, 2];
        marks.resize(marks.len() + MAX_MARK_DEPTH + 1, b'(');
        assert!(assert_format(&marks).contains("MARK"));
    }

    #[test]
    fn calls_check_their_arguments() {
        // _rebuild_tensor_v2 on a non-storage.
        let mut w = Writer::default();
        w.op(0x80).op(2).op(b'}').op(b'(').str("x").global("torch._utils", "_rebuild_tensor_v2");
        w.op(b'(').op(b'N').int(0).int_tuple(&[1]).int_tuple(&[1]).op(0x89).op(b'N').op(b't').op(b'R');
        w.op(b'u').op(b'.');
        assert!(assert_format(&w.bytes).contains("storage"));
        // Calling a storage class or a non-global.
        let mut w = Writer::default();
        w.op(0x80).op(2).global("torch", "FloatStorage").op(b')').op(b'R').op(b'.');
        assert!(assert_format(&w.bytes).contains("cannot call"));
        assert_format(&[0x80, 2, b'N', b')', b'R', b'.']);
    }

    #[test]
    fn non_state_dicts_are_refused_clearly() {
        assert!(assert_format(&[0x80, 2, b']', b'.']).contains("expected a dict"));
        // {"model": {}}
        let mut w = Writer::default();
        w.op(0x80).op(2).op(b'}').str("model").op(b'}').op(b's').op(b'.');
        assert!(assert_format(&w.bytes).contains("nested dict"));
        // {"x": 1}
        let mut w = Writer::default();
        w.op(0x80).op(2).op(b'}').str("x").int(1).op(b's').op(b'.');
        assert!(assert_format(&w.bytes).contains("expected a tensor"));
    }

    #[test]
    fn ordered_dict_with_metadata_parameters_and_protocol_4_strings() {
        // OrderedDict() REDUCE, SHORT_BINUNICODE names, _rebuild_parameter, BUILD with _metadata.
        let mut w = Writer::default();
        w.op(0x80).op(2).global("collections", "OrderedDict").op(b')').op(b'R').put(0).op(b'(');
        w.op(0x8c).op(1).op(b'w'); // SHORT_BINUNICODE "w"
        w.global("torch._utils", "_rebuild_parameter");
        w.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        w.op(b'(').str("storage").global("torch", "BFloat16Storage").str("0").str("cpu").int(2).op(b't').op(b'Q');
        w.int(0).int_tuple(&[2]).int_tuple(&[1]).op(0x89).global("collections", "OrderedDict").op(b')').op(b'R');
        w.op(b't').op(b'R').op(0x88).global("collections", "OrderedDict").op(b')').op(b'R').op(0x87).op(b'R');
        w.op(b'u');
        w.op(b'}').str("_metadata").global("collections", "OrderedDict").op(b')').op(b'R').op(b's').op(b'b');
        w.op(b'.');
        let tensors = run(&w.bytes).unwrap();
        assert_eq!(tensors.len(), 1);
        assert_eq!(tensors[0].0, "w");
        assert_eq!(tensors[0].1.storage.dtype, StorageDType::BF16);
    }

    #[test]
    fn rebuild_from_type_v2_newobj_and_int_storage_keys() {
        // {"p": _rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, (storage, 0, (2,), (1,), False, OrderedDict()), {})}
        // with the outer dict made by NEWOBJ OrderedDict and an int storage key.
        let mut w = Writer::default();
        w.op(0x80).op(2).global("collections", "OrderedDict").op(b')').op(0x81).op(b'(').str("p");
        w.global("torch._tensor", "_rebuild_from_type_v2").op(b'(').global("torch._utils", "_rebuild_tensor_v2");
        w.global("torch.nn.parameter", "Parameter").op(b'(');
        w.op(b'(').str("storage").global("torch", "IntStorage").int(3).str("cpu").int(2).op(b't').op(b'Q');
        w.int(0).int_tuple(&[2]).int_tuple(&[1]).op(0x89).global("collections", "OrderedDict").op(b')').op(b'R').op(b't');
        w.op(b'}').op(b't').op(b'R').op(b'u').op(b'.');
        let tensors = run(&w.bytes).unwrap();
        assert_eq!(tensors[0].0, "p");
        assert_eq!(tensors[0].1.storage, StorageRef { dtype: StorageDType::I32, key: "3".into(), numel: 2 });
        // A tensor type is only a tag: calling it is refused.
        let mut w = Writer::default();
        w.op(0x80).op(2).global("torch", "Tensor").op(b')').op(b'R').op(b'.');
        assert!(assert_format(&w.bytes).contains("cannot call"));
    }

    #[test]
    fn long_integers_decode_as_twos_complement() {
        assert_eq!(decode_long(&[]).unwrap(), 0);
        assert_eq!(decode_long(&[0xff]).unwrap(), -1);
        assert_eq!(decode_long(&[0x00, 0x01]).unwrap(), 256);
        assert_eq!(decode_long(&[0xff, 0x7f]).unwrap(), 32767);
        assert_eq!(decode_long(&[0x00, 0x80]).unwrap(), -32768);
        assert!(decode_long(&[0; 9]).is_err());
    }
}
