//! The stock importer: reads a stock CSV file ([`file`]), streams it to
//! `InventoryService.ImportStock` with backpressure and resumes after a
//! dropped connection ([`import`]), and generates test files
//! ([`generate`]). The binary `orderflow-importer` is a thin CLI over these.

pub mod file;
pub mod generate;
pub mod import;
