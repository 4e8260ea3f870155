//! twinlink: an ETSI NGSI-LD (GS CIM 009 V1.9.1) context broker for local digital twins.
//!
//! The crate is a library so that black-box tests, benchmarks and the `twinlink` binary share one
//! implementation: `http` parses the transport, `ld` resolves JSON-LD contexts, `model` holds typed
//! NGSI-LD, `service` implements each operation once and `store` persists it.

pub mod auth;
pub mod config;
pub mod error;
pub mod federation;
pub mod http;
pub mod ingest;
pub mod ld;
pub mod model;
pub mod outbound;
pub mod query;
pub mod retry;
pub mod server;
pub mod service;
pub mod store;
pub mod subscription;
pub mod syntax;
pub mod telemetry;
pub mod temporal;

/// The memory allocator of the broker, and so of its tests and benchmarks. Serving a page of
/// entities or a group of writes allocates and frees many short-lived buffers of many sizes from
/// several threads; glibc's allocator spent about a third of the broker's CPU on a q query page in
/// `malloc`, `free` and their consolidation (see docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for the broker's process, called first thing by the binary.
/// With huge pages a 2 MiB page is resident for a few live bytes of the allocator's, and the
/// kernel folds pages the allocator gave back into whole huge pages again: idle RSS was
/// 27.9-28.8 MiB with them and 17.9 MiB without (docs/benchmarks.md, "Memory"). mimalloc is built
/// not to ask for them (its `no_thp` feature); this also keeps them off where the kernel gives
/// them unasked (THP mode `always`). The broker's heap is tens of megabytes, where they save little.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("twinlink: transparent huge pages stay on ({e})");
    }
}
