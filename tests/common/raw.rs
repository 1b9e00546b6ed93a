//! Raw HTTP/1.1 over TCP, for requests a normal client would rewrite or refuse to send.
#![allow(dead_code)]
