//! Writing and opening `.qmb` artifacts from the compiler's side: what goes into the header
//! (config, recipe, kernel plan, tokenizer) and how an artifact becomes a runnable model again.
//! The byte format itself lives in `runtime::artifact`.

use std::path::Path;

use ir::{Op, VerifiedGraph};
use runtime::artifact::{read_artifact, write_artifact, ArtifactError, ArtifactHeader, ArtifactMeta};
use runtime::tokenizer::Tokenizer;
use runtime::Executor;

use crate::checkpoint::ModelConfig;
use crate::program::Program;
use crate::target::{Method, Target};
use crate::CompileError;

/// The compiler's description of the model, stored as the header's `model_config_json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// The architecture.
    pub config: ModelConfig,
    /// The recipe that produced the artifact.
    pub method: Method,
    /// The model's `tokenizer.json`, so `quambac run model.qmb` needs nothing else.
    pub tokenizer_json: Option<String>,
    /// For GPU targets: the generated kernels compiled ahead of time, when NVRTC was available.
    #[serde(default)]
    pub cuda: Option<CudaCode>,
}

/// PTX of a GPU artifact's generated CUDA source.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CudaCode {
    /// The architecture it was compiled for (`sm_90`, `sm_87`, `sm_86`).
    pub arch: String,
    /// A hash of the source it was compiled from: a runtime that plans a different source (another
    /// quamba version) compiles its own instead of trusting this PTX.
    pub source_hash: u64,
    /// The PTX text.
    pub ptx: String,
}

/// The NVRTC architecture of a target device, or None for the CPU.
pub fn cuda_arch(device: crate::target::Device) -> Option<&'static str> {
    use crate::target::Device;
    match device {
        Device::Cpu => None,
        Device::Orin => Some("sm_87"),
        Device::A5000 => Some("sm_86"),
        Device::H100 => Some("sm_90"),
    }
}

/// A GPU target's launches (`value kernel`, in order) and their PTX where NVRTC compiled it.
type CudaLaunches = (Vec<String>, Option<CudaCode>);

/// For a GPU target: the CUDA launches as the kernel plan, and their PTX when NVRTC is available
/// (otherwise the runtime compiles the source when it loads the artifact). A graph the CUDA
/// backend cannot run is an error here rather than on the device.
fn cuda_plan(program: &Program, target: Target) -> Result<Option<CudaLaunches>, CompileError> {
    let Some(arch) = cuda_arch(target.device) else { return Ok(None) };
    let graph = VerifiedGraph::new(program.graph.clone())?;
    let plan = kernels::cuda::plan(&graph).map_err(|e| CompileError::Structure(e.to_string()))?;
    let launches = plan.launches.iter().map(|l| format!("{} {}", l.value, l.kernel.name)).collect();
    let code = if runtime::cuda::nvrtc_available() {
        let ptx = runtime::cuda::compile_ptx(&plan.source, arch).map_err(|e| CompileError::Structure(e.to_string()))?;
        Some(CudaCode { arch: arch.to_string(), source_hash: runtime::cuda::source_hash(&plan.source), ptx })
    } else {
        None
    };
    Ok(Some((launches, code)))
}

/// The kernel each op runs as, in execution order (the CPU and CUDA backends refine this plan).
pub fn kernel_plan(program: &Program) -> Vec<String> {
    let g = &program.graph;
    let order = g.topo_order().unwrap_or_default();
    order
        .iter()
        .filter_map(|v| {
            let node = g.node(*v);
            Some(match &node.op {
                Op::Tokens => return None,
                Op::QLinear { weight, act_scale, .. } => {
                    format!("qlinear_w{}a{}", g.weight(*weight).dtype.bits(), if act_scale.is_some() { 8 } else { 16 })
                }
                Op::QEmbedding { table, .. } => format!("qembedding_w{}", g.weight(*table).dtype.bits()),
                other => other.name().to_string(),
            })
        })
        .collect()
}

/// Writes `program` as an artifact at `path` (atomically). Returns the bytes written.
pub fn write(path: &Path, program: &Program, target: Target, method: Method, tokenizer_json: Option<String>) -> Result<u64, CompileError> {
    let (plan, cuda) = match cuda_plan(program, target)? {
        Some((launches, code)) => (launches, code),
        None => (kernel_plan(program), None),
    };
    let info = ModelInfo { config: program.config.clone(), method, tokenizer_json, cuda };
    let meta = ArtifactMeta {
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        target: target.to_string(),
        model_config_json: serde_json::to_string(&info).map_err(|e| CompileError::Structure(format!("serialising the model config: {e}")))?,
        kernel_plan: plan,
    };
    write_artifact(path, &meta, &program.graph, &program.weights).map_err(CompileError::Artifact)
}

/// A model loaded from an artifact, ready to run on the CPU reference executor.
pub struct LoadedArtifact {
    /// What the compiler recorded.
    pub info: ModelInfo,
    /// The target it was compiled for.
    pub target: String,
    /// The executor.
    pub executor: Executor,
    /// The embedded tokenizer.
    pub tokenizer: Option<Tokenizer>,
}

/// Reads an artifact's header (for `quambac inspect`) and checks that its target is one this
/// compiler knows.
pub fn read_header(path: &Path) -> Result<ArtifactHeader, CompileError> {
    let header = runtime::artifact::read_header(path).map_err(CompileError::Artifact)?;
    known_target(path, &header.target)?;
    Ok(header)
}

/// The artifact's target, refused when this compiler does not know it: the checksum only proves
/// the bytes are the writer's, and a newer writer may target hardware this version cannot plan.
fn known_target(path: &Path, target: &str) -> Result<Target, CompileError> {
    target.parse::<Target>().map_err(|_| {
        CompileError::Artifact(ArtifactError::Target {
            path: path.to_path_buf(),
            found: target.to_string(),
            expected: "a target this quambac knows (cpu|orin|a5000|h100 - w8a8|w4a8|w4a16|w4ax)".to_string(),
        })
    })
}

/// Opens an artifact; `expected_target`, if given, must match.
pub fn open(path: &Path, expected_target: Option<&str>) -> Result<LoadedArtifact, CompileError> {
    open_with(path, expected_target, runtime::KernelBackend::Jit)
}

/// [`open`], choosing what runs the integer ops on the CPU. The reference backend keeps every
/// weight's data in the executor (other backends, such as CUDA, upload from it).
pub fn open_with(path: &Path, expected_target: Option<&str>, backend: runtime::KernelBackend) -> Result<LoadedArtifact, CompileError> {
    let art = read_artifact(path, expected_target).map_err(CompileError::Artifact)?;
    known_target(path, &art.header.target)?;
    let corrupt = |detail: String| CompileError::Artifact(ArtifactError::Corrupt { path: path.to_path_buf(), detail });
    let info: ModelInfo = serde_json::from_str(&art.header.model_config_json).map_err(|e| corrupt(format!("model description: {e}")))?;
    let graph = VerifiedGraph::new(art.graph).map_err(|e| corrupt(format!("graph fails verification: {e}")))?;
    let executor = Executor::with_kernel_backend(graph, art.weights, backend)?;
    let tokenizer = match &info.tokenizer_json {
        Some(json) => Some(Tokenizer::from_json(json, &path.display().to_string())?),
        None => None,
    };
    Ok(LoadedArtifact { info, target: art.header.target, executor, tokenizer })
}
