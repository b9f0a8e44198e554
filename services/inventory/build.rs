//! `embed_migrations!` reads the migrations folder at compile time, but
//! cargo does not know it: without this a new migration folder would not be
//! embedded until something else rebuilt the crate.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations/inventory");
}
