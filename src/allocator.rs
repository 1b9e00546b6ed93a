//! mimalloc as the global allocator, asked the way its own `malloc` is fastest.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`, even those that
//! need no more than the word alignment every mimalloc block has. For a block over 1 KiB that
//! call takes a generic path that over-allocates and marks the page as holding interior
//! pointers: on the request path (hyper's 8 KiB read buffers, header maps, the request's
//! future) that cost about 470 instructions per proxied request over plain `mi_malloc`
//! (callgrind, benches/load arm C). So, as std's `System` allocator does with `malloc`, a
//! layout that plain `mi_malloc` already satisfies goes there; any other to the aligned call.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Every mimalloc block is aligned to a word: its size classes are multiples of one (the
/// 24-byte class, for one, is not 16-aligned, so 16 is not plain `mi_malloc`'s guarantee).
const WORD: usize = std::mem::size_of::<usize>();

pub struct Mimalloc;

/// `mi_option_arena_eager_commit` in mimalloc 2's `mimalloc.h`.
const ARENA_EAGER_COMMIT: mi::mi_option_t = 4;

/// Sets mimalloc's options; the binary calls this before `main` (see main.rs), before the
/// first arena is reserved. mimalloc 2 commits its arenas up front where the OS overcommits
/// (Linux), and the pages it frees then stay resident: with 100,000 keys warmed into the hot
/// tier, RSS was 260-305 MiB, against 227-231 with arenas committed as they are used (and
/// 221-226 under mimalloc 3; benches/load's memory figure with 300,000 keys in the store).
pub fn configure() {
    // SAFETY: sets a value mimalloc reads when it next reserves an arena.
    unsafe { mi::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

/// Whether plain `mi_malloc(size)` returns memory aligned for `align`.
#[inline(always)]
fn plain(align: usize) -> bool {
    align <= WORD
}

// SAFETY: each method hands its layout's size and alignment to the mimalloc call that
// honours them (`plain` keeps to what `mi_malloc` guarantees), and memory is freed by
// `mi_free` and resized by `mi_realloc*`, which accept any block mimalloc returned.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = if plain(layout.align()) {
            unsafe { mi::mi_malloc(layout.size()) }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) }
        };
        p.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = if plain(layout.align()) {
            unsafe { mi::mi_zalloc(layout.size()) }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) }
        };
        p.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = if plain(layout.align()) {
            unsafe { mi::mi_realloc(ptr.cast::<c_void>(), new_size) }
        } else {
            unsafe { mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()) }
        };
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set is the one mimalloc knows as `arena_eager_commit`: its default, 2 ("on
    /// where the OS overcommits"), is no neighbouring option's, and `configure` turns it off.
    #[test]
    fn configure_commits_arenas_as_they_are_used() {
        assert_eq!(unsafe { mi::mi_option_get(ARENA_EAGER_COMMIT) }, 2);
        configure();
        assert_eq!(unsafe { mi::mi_option_get(ARENA_EAGER_COMMIT) }, 0);
    }

    /// Every size around mimalloc's class boundaries, with every alignment up to a page:
    /// each block is aligned as asked, writable over its whole size, and survives a resize.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let sizes = (1..=80).chain([127, 128, 1000, 1024, 1025, 4096, 8192, 8193, 70_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "resized: size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xa5));
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
