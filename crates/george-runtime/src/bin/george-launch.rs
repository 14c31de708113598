//! The launcher on its own, for the runtime's tests (George's binary offers
//! the same as `george sandbox-exec`): `george-launch <spec JSON>`.

fn main() {
    let spec = std::env::args().nth(1).unwrap_or_default();
    george_runtime::launch::main(&spec)
}
