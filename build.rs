//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!`
//! embeds the files of `migrations/postgres` at compile time, and cargo
//! would otherwise not look at them again.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
