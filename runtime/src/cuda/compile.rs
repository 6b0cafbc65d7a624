//! Compiling generated CUDA source to PTX with NVRTC, cached on disk by content.

use std::path::PathBuf;

use super::CudaError;

/// The NVRTC architecture name for a compute capability.
pub fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (9, _) => "sm_90",
        (8, 9) => "sm_89",
        (8, 7) => "sm_87",
        (8, 6) => "sm_86",
        (8, _) => "sm_80",
        (10, _) => "sm_100",
        (12, _) => "sm_120",
        _ => "sm_80",
    }
}

/// Whether NVRTC's library can be loaded (cudarc panics on first use when it cannot).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names (libloading::Library::new)
    // and drops it; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles `source` for `arch` (e.g. `sm_90`) to PTX text.
pub fn compile_ptx(source: &str, arch: &'static str) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let options = cudarc::nvrtc::CompileOptions { arch: Some(arch), options: vec!["-std=c++17".into()], ..Default::default() };
    match cudarc::nvrtc::compile_ptx_with_opts(source, options) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(CudaError::Compile { arch: arch.into(), log: log.to_string_lossy().into_owned() }),
        Err(e) => Err(CudaError::Compile { arch: arch.into(), log: format!("{e:?}") }),
    }
}

/// A real architecture's machine code for a source, as NVRTC's ptxas built it.
pub struct Cubin {
    /// What ptxas reported (`--ptxas-options=-v`): per entry point its registers, stack frame
    /// and spill bytes.
    pub ptxas_log: String,
    /// The ELF image (for a disassembler).
    pub image: Vec<u8>,
}

/// `source` compiled for `arch` (a real architecture such as `sm_90`) down to machine code. The
/// PTX cannot show what ptxas does to it (spills, the order of loads and their first uses);
/// tests read that from here.
pub fn compile_cubin(source: &str, arch: &'static str) -> Result<Cubin, CudaError> {
    use cudarc::nvrtc::{result, sys};
    if !nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let failed = |log: String| CudaError::Compile { arch: arch.into(), log };
    let src = std::ffi::CString::new(source).map_err(|_| failed("the source holds a NUL byte".into()))?;
    let prog = result::create_program(&src, None).map_err(|e| failed(format!("{e:?}")))?;
    let options = [format!("--gpu-architecture={arch}"), "-std=c++17".into(), "--ptxas-options=-v".into()];
    // SAFETY: `prog` was created from `src`, which outlives it, and is destroyed only below.
    let compiled = unsafe { result::compile_program(prog, &options) };
    // SAFETY: `prog` is live (compiled or not).
    let log = unsafe { result::get_program_log(prog) }.map(|raw| {
        // SAFETY: NVRTC's log is a NUL-terminated string, here copied into `raw`.
        let text = unsafe { std::ffi::CStr::from_ptr(raw.as_ptr()) };
        text.to_string_lossy().into_owned()
    });
    let image = compiled.is_ok().then(|| {
        let mut size = 0usize;
        // SAFETY: `prog` compiled for a real architecture, so it holds a CUBIN whose size NVRTC
        // writes to `size`.
        unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }.result()?;
        let mut image = vec![0u8; size];
        // SAFETY: `image` has the `size` bytes NVRTC just reported for this program's CUBIN.
        unsafe { sys::nvrtcGetCUBIN(prog, image.as_mut_ptr().cast()) }.result()?;
        Ok::<_, result::NvrtcError>(image)
    });
    // SAFETY: `prog` is destroyed once, here, and not used after.
    let _ = unsafe { result::destroy_program(prog) };
    let ptxas_log = log.map_err(|e| failed(format!("{e:?}")))?;
    match image {
        Some(Ok(image)) => Ok(Cubin { ptxas_log, image }),
        Some(Err(e)) => Err(failed(format!("reading the CUBIN: {e:?}"))),
        None => Err(failed(ptxas_log)),
    }
}

/// Where the PTX of `source` for `arch` is cached: `$QUAMBA_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/quamba`, else `~/.cache/quamba`, then `kernels/<hash>-<arch>.ptx`.
pub fn ptx_cache_path(source: &str, arch: &str) -> Option<PathBuf> {
    let root = std::env::var_os("QUAMBA_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("quamba")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache").join("quamba")))?;
    Some(root.join("kernels").join(format!("{:016x}-{arch}.ptx", fnv1a(source.as_bytes()))))
}

/// The PTX for `source`: from the cache when present, else compiled and cached (best effort).
pub(super) fn cached_ptx(source: &str, arch: &'static str) -> Result<String, CudaError> {
    let path = ptx_cache_path(source, arch);
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(text);
    }
    let ptx = compile_ptx(source, arch)?;
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A unique temporary name then a rename, so concurrent loaders never read half a file.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &ptx).is_ok() {
            let _ = std::fs::rename(&tmp, &p);
        }
    }
    Ok(ptx)
}

/// The content hash used to key compiled PTX to its source.
pub fn source_hash(source: &str) -> u64 {
    fnv1a(source.as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}
