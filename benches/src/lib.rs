//! Benchmarks of Cairn. See `benches/README.md` for how to run them and the latest numbers.
