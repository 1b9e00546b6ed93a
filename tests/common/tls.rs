//! Certificates made by the test (rcgen) and TLS-capable test servers and clients.
#![allow(dead_code)]
