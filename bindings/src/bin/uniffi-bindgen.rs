//! uniffi's generator, built against the same uniffi as the library (library mode reads the
//! metadata compiled into `libstorycad_ffi`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
