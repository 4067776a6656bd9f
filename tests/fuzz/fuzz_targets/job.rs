//! A job file: parsed and validated (in a scratch project with templates and scripts to
//! point at), or refused with positioned diagnostics.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn job_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("crier-fuzz-job-{}", std::process::id()));
        for (rel, text) in [
            ("jobs/templates/a.sms.j2", "Hi {{ customer.name }}"),
            ("jobs/templates/broken.j2", "Hi {{ customer.name }\n{% if %}"),
            ("jobs/people.csv", "id,name\n1,Ann\n"),
            ("scripts/ok.rhai", "fn filter(c) { true }\nfn route(m, c) { \"outbox\" }\n"),
            ("scripts/broken.rhai", "fn filter(c) {\n  let x = ;\n}\n"),
        ] {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir.join("jobs/fuzz.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        crier::fuzz::job(job_path(), text);
    }
});
