//! Random container names, `adjective_noun`, when the user gives none.

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosy", "crisp", "daring", "eager", "fair",
    "fleet", "gentle", "glad", "grand", "hardy", "humble", "jolly", "keen", "kind", "lively",
    "lucid", "merry", "mellow", "nimble", "noble", "patient", "plucky", "proud", "quick", "quiet",
    "rapid", "ready", "serene", "sharp", "shy", "sleek", "snug", "steady", "stoic", "sunny",
    "swift", "tidy", "trusty", "vivid", "warm", "wise", "witty", "zesty",
];

const NOUNS: &[&str] = &[
    "anchor",
    "barge",
    "beacon",
    "buoy",
    "cargo",
    "current",
    "dinghy",
    "dock",
    "ferry",
    "harbor",
    "hull",
    "jetty",
    "keel",
    "lantern",
    "lighthouse",
    "mast",
    "mooring",
    "oar",
    "otter",
    "pelican",
    "pier",
    "puffin",
    "quay",
    "raft",
    "reef",
    "rudder",
    "sail",
    "schooner",
    "seal",
    "skiff",
    "sloop",
    "stern",
    "tern",
    "tide",
    "tugboat",
    "wave",
    "whale",
    "wharf",
    "yacht",
    "gull",
    "cormorant",
    "capstan",
    "bollard",
    "tiller",
    "galley",
    "hatch",
];

/// A random name; `taken` says whether a candidate is in use.
pub fn generate(taken: impl Fn(&str) -> bool) -> String {
    for attempt in 0..64u32 {
        let mut bytes = [0u8; 4];
        // A failed draw only makes the name less random; uniqueness is checked below.
        let _ = getrandom::fill(&mut bytes);
        let a = ADJECTIVES[usize::from(bytes[0]) % ADJECTIVES.len()];
        let n = NOUNS[usize::from(bytes[1]) % NOUNS.len()];
        let name = if attempt < 8 {
            format!("{a}_{n}")
        } else {
            format!("{a}_{n}{}", u16::from_le_bytes([bytes[2], bytes[3]]) % 100)
        };
        if !taken(&name) {
            return name;
        }
    }
    format!("wharf_{}", &crate::util::random_id()[..12])
}
