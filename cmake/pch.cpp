// The translation unit that owns the project's one precompiled header (CMakeLists.txt,
// iisan_pch); every LibTorch target reuses it. It defines nothing.
