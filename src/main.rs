//! usb9pfsd entry point (stub while the core is being written).
fn main() {
    eprintln!("usb9pfsd: not built yet");
    std::process::exit(2);
}
