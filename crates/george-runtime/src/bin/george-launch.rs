//! The launcher on its own, for the runtime's tests (George's binary offers
//! the same as `george sandbox-exec`): `george-launch <spec JSON> -- <program> [args…]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    george_runtime::launch::main(&args, &|_: &[String], _: Option<String>| None)
}
