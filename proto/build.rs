//! Compiles every `.proto` under `orderflow/` with protox (pure Rust, so a
//! fresh machine needs no protoc) and writes the descriptor set that the
//! servers register for reflection.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut files = Vec::new();
    collect_protos(std::path::Path::new("orderflow"), &mut files)?;
    files.sort();

    let fds = protox::Compiler::new(["."])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?
        .file_descriptor_set();
    // compile_fds() does not write the descriptor set itself.
    std::fs::write(out.join("orderflow_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=orderflow");
    Ok(())
}

fn collect_protos(
    dir: &std::path::Path,
    files: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
