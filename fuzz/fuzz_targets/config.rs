//! Repository config on untrusted bytes: `RepoConfig::check_prefix`, `RepoConfig::decode` (the
//! plaintext) and `RepoConfig::open` under a fixed key. None may panic; an accepted plaintext
//! validates, encodes and decodes back to an equal config.
#![no_main]

use cairn_format::{MasterKey, RepoConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let prefix = RepoConfig::check_prefix(data);
    if let Ok(version) = prefix {
        assert_eq!(version, cairn_format::FORMAT_VERSION);
    }

    if let Ok(cfg) = RepoConfig::decode(data) {
        cfg.validate().expect("a decoded config must validate");
        let encoded = cfg.encode().expect("a decoded config must encode");
        assert_eq!(RepoConfig::decode(&encoded).as_ref(), Ok(&cfg));
    }

    let key = MasterKey::from_parts([1; 32], [2; 32], [3; 32]);
    let opened = RepoConfig::open(&key, data);
    if prefix.is_err() {
        assert!(opened.is_err());
    }
    if let Ok(cfg) = opened {
        // Only reachable from seeds sealed under the fixed key.
        cfg.validate().expect("an opened config must validate");
    }
});
