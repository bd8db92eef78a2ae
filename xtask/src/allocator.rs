//! glibc's allocator, told to keep freed memory for training.
//!
//! Every training step allocates and frees the same buffers of 1–10 MB (patch matrices,
//! gradients). With glibc's defaults such blocks go back to the kernel when freed (`munmap`,
//! or trimming the heap's top past a threshold that adapts to freed sizes) and the next step
//! faults the same pages in again, each one zero-filled by the kernel: a third of a
//! one-thread `train` profile (perf, Zen 5) was page faults, `brk` and `munmap`. Serving
//! blocks up to 32 MiB (glibc's largest mmap threshold) from the heap and trimming only past
//! 1 GiB keeps them mapped. Training's results do not depend on where buffers live.

/// Sets the allocator's mmap and trim thresholds (glibc only; elsewhere nothing).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        // glibc's <malloc.h>
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: `mallopt` only changes the allocator's tuning parameters, which glibc
        // allows at any time; a value it rejects leaves the default (return value 0).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
