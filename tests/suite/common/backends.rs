//! The places the suite puts repositories — a local directory, the S3 test server (moto) and
//! the Azure test server (Azurite), which `tests/run.sh` starts — and how to reach each: one
//! helper for every test that runs against all of them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use lifeboat::storage::{CloudOptions, CloudStorage, CloudUrl, LocalStorage, Storage};

use super::{lifeboat_cmd, run_cmd, Out, Scratch};

/// A place to put repositories, and how to reach it.
pub struct Backend {
    pub name: &'static str,
    /// Base URL; each test appends a unique prefix.
    pub base: String,
    /// Environment for the `lifeboat` process.
    pub env: Vec<(&'static str, String)>,
    /// Options for in-process storage.
    pub options: HashMap<String, String>,
    _scratch: Option<Scratch>,
}

pub fn s3() -> Backend {
    let bucket = super::required_env("LIFEBOAT_TEST_S3_BUCKET");
    Backend {
        name: "s3",
        base: format!("s3://{bucket}"),
        env: super::s3_env(),
        options: super::s3_options(),
        _scratch: None,
    }
}

pub fn azure() -> Backend {
    let url = super::required_env("LIFEBOAT_TEST_AZURITE_URL");
    let container = super::required_env("LIFEBOAT_TEST_AZURE_CONTAINER");
    // object_store reads the emulator's address from the environment only; every test sets
    // the same value.
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &url);
    Backend {
        name: "azure",
        base: format!("az://{container}"),
        env: vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
            ("AZURITE_BLOB_STORAGE_URL", url),
        ],
        options: [("use_emulator".to_string(), "true".to_string())]
            .into_iter()
            .collect(),
        _scratch: None,
    }
}

pub fn local() -> Backend {
    let scratch = Scratch::new();
    Backend {
        name: "local",
        base: scratch.path().display().to_string(),
        env: Vec::new(),
        options: HashMap::new(),
        _scratch: Some(scratch),
    }
}

pub fn backends() -> Vec<Backend> {
    vec![local(), s3(), azure()]
}

impl Backend {
    pub fn url(&self, prefix: &str) -> String {
        format!("{}/{prefix}-{:08x}", self.base, rand::random::<u32>())
    }

    pub fn run(&self, args: Vec<OsString>) -> Out {
        let mut cmd = lifeboat_cmd();
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run_cmd(cmd)
    }

    /// The storage at `url`, without retries (as the servers see it).
    pub fn storage(&self, url: &str) -> Arc<dyn Storage> {
        match CloudUrl::parse(url).expect("url") {
            Some(u) => {
                let opts = CloudOptions {
                    options: self.options.clone(),
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    request_timeout: Duration::from_secs(20),
                };
                Arc::new(CloudStorage::new(&u, url, &opts).expect("storage"))
            }
            None => Arc::new(LocalStorage::new(url)),
        }
    }
}
