#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| egret::fuzzing::unblock_answer(data));
