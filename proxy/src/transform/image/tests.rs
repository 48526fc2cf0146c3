//! End-to-end tests of the image engine (filled below).
