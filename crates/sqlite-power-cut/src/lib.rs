//! A SQLite VFS for tests that simulates a power cut.
//!
//! [`install`] registers it as the process's default VFS, wrapping SQLite's own `unix`
//! VFS, so every connection the code under test opens goes through it unchanged. It
//! remembers, per file, what each write or truncate since that file's last successful
//! `xSync` replaced. [`cut`] then makes every write, truncate, sync and delete under a
//! folder fail, as if the machine had stopped; once the code under test has closed
//! its connections, [`restore`] puts each file back as it was at its last sync (undoing
//! the unsynced changes newest first, then cutting the file to its synced length), and
//! the folder works normally again.
//!
//! The model is the harshest one a disk may legally show after a power cut: nothing
//! that was not synced survives. What it leaves out: a synced file's directory entry is
//! taken as durable (SQLite syncs the directory itself where it matters), and the
//! `-shm` wal-index is left as it was (SQLite rebuilds it when the first connection
//! opens the database after the others are gone, as after a reboot).

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};

use rusqlite::ffi;

/// What one file needs to go back to its last synced state.
#[derive(Debug, Default)]
struct Unsynced {
    /// The file's length at its last sync.
    synced_len: u64,
    /// Bytes that existed at the last sync and were overwritten (or cut off) since,
    /// oldest first: (offset, old bytes).
    undo: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct State {
    /// Files with changes since their last sync, by path.
    unsynced: HashMap<PathBuf, Unsynced>,
    /// Folders whose power is cut.
    cut: Vec<PathBuf>,
    /// Successful syncs and writes per file, for tests to see the VFS is in use.
    syncs: HashMap<PathBuf, u64>,
    writes: HashMap<PathBuf, u64>,
}

impl State {
    fn is_cut(&self, path: &Path) -> bool {
        self.cut.iter().any(|dir| path.starts_with(dir))
    }
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// SQLite's `unix` VFS, which does the real work.
struct Unix(*mut ffi::sqlite3_vfs);
// The pointer is to SQLite's static VFS object, which SQLite shares between threads.
unsafe impl Send for Unix {}
unsafe impl Sync for Unix {}
static UNIX: OnceLock<Unix> = OnceLock::new();

fn unix() -> *mut ffi::sqlite3_vfs {
    UNIX.get().expect("installed").0
}

/// Registers the VFS as the process's default. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLite's documented VFS API; the registered object is leaked, so it
        // outlives every connection.
        unsafe {
            let unix = ffi::sqlite3_vfs_find(c"unix".as_ptr());
            assert!(!unix.is_null(), "SQLite has a unix VFS");
            let _ = UNIX.set(Unix(unix));
            let mut vfs: ffi::sqlite3_vfs = *unix;
            vfs.szOsFile = c_int::try_from(size_of::<CutFile>()).expect("small");
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = c"power-cut".as_ptr();
            vfs.xOpen = Some(open);
            vfs.xDelete = Some(delete);
            let vfs = Box::leak(Box::new(vfs));
            assert_eq!(ffi::sqlite3_vfs_register(vfs, 1), ffi::SQLITE_OK);
        }
    });
}

/// Cuts the power of every file under `dir`: from now on their writes, truncates,
/// syncs and deletes fail with an I/O error; reads still work.
pub fn cut(dir: &Path) {
    state().cut.push(dir.to_owned());
}

/// Puts every file under `dir` back to its content at its last sync and lifts the
/// cut. Call it once every connection to those files is closed. Returns how many
/// files had unsynced changes that were dropped.
pub fn restore(dir: &Path) -> std::io::Result<usize> {
    let mut state = state();
    let paths: Vec<PathBuf> = state
        .unsynced
        .keys()
        .filter(|p| p.starts_with(dir))
        .cloned()
        .collect();
    for path in &paths {
        let unsynced = state.unsynced.remove(path).expect("listed");
        if !path.exists() {
            continue;
        }
        let mut file = OpenOptions::new().write(true).open(path)?;
        for (offset, old) in unsynced.undo.iter().rev() {
            file.seek(SeekFrom::Start(*offset))?;
            file.write_all(old)?;
        }
        file.set_len(unsynced.synced_len)?;
        file.sync_all()?;
    }
    state.cut.retain(|d| !d.starts_with(dir));
    Ok(paths.len())
}

/// Successful syncs of the file at `path` so far.
pub fn syncs(path: &Path) -> u64 {
    state().syncs.get(path).copied().unwrap_or(0)
}

/// Successful writes to the file at `path` so far.
pub fn writes(path: &Path) -> u64 {
    state().writes.get(path).copied().unwrap_or(0)
}

/// Our file object: SQLite's header, then the unix VFS's own file object.
#[repr(C)]
struct CutFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    real_size: usize,
    /// The file's path, for the files that last (database, WAL, journal).
    path: Option<Box<PathBuf>>,
}

const REAL_ALIGN: usize = 16;

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

fn path_of(name: *const c_char) -> Option<PathBuf> {
    if name.is_null() {
        return None;
    }
    // SAFETY: SQLite passes a NUL-terminated file name.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// The file object's parts.
///
/// # Safety
/// `file` is a `CutFile` that `open` initialised.
unsafe fn parts<'a>(file: *mut ffi::sqlite3_file) -> (&'a CutFile, &'a ffi::sqlite3_io_methods) {
    unsafe {
        let file = &*(file as *const CutFile);
        (file, &*(*file.real).pMethods)
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let unix = unix();
        let real_size = usize::try_from((*unix).szOsFile).expect("positive");
        let layout = std::alloc::Layout::from_size_align(real_size, REAL_ALIGN).expect("layout");
        let real = std::alloc::alloc_zeroed(layout).cast::<ffi::sqlite3_file>();
        assert!(!real.is_null(), "allocation");
        let rc = ((*unix).xOpen.expect("xOpen"))(unix, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            if !(*real).pMethods.is_null() {
                ((*(*real).pMethods).xClose.expect("xClose"))(real);
            }
            std::alloc::dealloc(real.cast(), layout);
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        let temporary = ffi::SQLITE_OPEN_DELETEONCLOSE
            | ffi::SQLITE_OPEN_TEMP_DB
            | ffi::SQLITE_OPEN_TEMP_JOURNAL
            | ffi::SQLITE_OPEN_TRANSIENT_DB
            | ffi::SQLITE_OPEN_SUBJOURNAL;
        let path = if flags & temporary == 0 {
            path_of(name).map(Box::new)
        } else {
            None
        };
        std::ptr::write(
            file.cast::<CutFile>(),
            CutFile {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                real,
                real_size,
                path,
            },
        );
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let path = path_of(name);
    let mut state = state();
    if let Some(path) = &path
        && state.is_cut(path)
    {
        return ffi::SQLITE_IOERR_DELETE;
    }
    let unix = unix();
    // SAFETY: forwarding SQLite's own arguments to the unix VFS.
    let rc = unsafe { ((*unix).xDelete.expect("xDelete"))(unix, name, sync_dir) };
    if rc == ffi::SQLITE_OK
        && let Some(path) = &path
    {
        state.unsynced.remove(path);
    }
    rc
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let cut_file = std::ptr::read(file.cast::<CutFile>());
        let rc = ((*(*cut_file.real).pMethods).xClose.expect("xClose"))(cut_file.real);
        let layout =
            std::alloc::Layout::from_size_align(cut_file.real_size, REAL_ALIGN).expect("layout");
        std::alloc::dealloc(cut_file.real.cast(), layout);
        (*file).pMethods = std::ptr::null();
        // Closing syncs nothing: unsynced changes stay recorded for `restore`.
        drop(cut_file.path);
        rc
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xRead.expect("xRead"))(f.real, buf, amt, offset)
    }
}

/// The file's current length.
///
/// # Safety
/// `f` is an open `CutFile`.
unsafe fn current_len(f: &CutFile, m: &ffi::sqlite3_io_methods) -> Result<u64, c_int> {
    let mut size: i64 = 0;
    let rc = unsafe { (m.xFileSize.expect("xFileSize"))(f.real, &mut size) };
    if rc == ffi::SQLITE_OK {
        Ok(u64::try_from(size).unwrap_or(0))
    } else {
        Err(rc)
    }
}

/// Before `[offset, end)` changes: remembers the synced length (on the first change
/// since the last sync) and the bytes there that the last sync covered.
///
/// # Safety
/// `f` is an open `CutFile` with a path.
unsafe fn remember(
    state: &mut State,
    f: &CutFile,
    m: &ffi::sqlite3_io_methods,
    path: &Path,
    offset: u64,
    end: u64,
) -> c_int {
    let len = match unsafe { current_len(f, m) } {
        Ok(len) => len,
        Err(rc) => return rc,
    };
    let unsynced = state
        .unsynced
        .entry(path.to_owned())
        .or_insert_with(|| Unsynced {
            synced_len: len,
            undo: Vec::new(),
        });
    // Bytes past the synced length go when the file is cut back to it; bytes past the
    // current length are covered by the entry of the truncate that removed them.
    let keep_to = end.min(len).min(unsynced.synced_len);
    if offset >= keep_to {
        return ffi::SQLITE_OK;
    }
    let mut old = vec![0u8; usize::try_from(keep_to - offset).expect("fits")];
    let rc = unsafe {
        (m.xRead.expect("xRead"))(
            f.real,
            old.as_mut_ptr().cast(),
            c_int::try_from(old.len()).expect("fits"),
            i64::try_from(offset).expect("fits"),
        )
    };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    unsynced.undo.push((offset, old));
    ffi::SQLITE_OK
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        let mut state = state();
        if let Some(path) = &f.path {
            if state.is_cut(path) {
                return ffi::SQLITE_IOERR_WRITE;
            }
            let start = u64::try_from(offset).expect("non-negative");
            let end = start + u64::try_from(amt).expect("non-negative");
            let rc = remember(&mut state, f, m, path, start, end);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let rc = (m.xWrite.expect("xWrite"))(f.real, buf, amt, offset);
        if rc == ffi::SQLITE_OK
            && let Some(path) = &f.path
        {
            *state.writes.entry((**path).clone()).or_default() += 1;
        }
        rc
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        let mut state = state();
        if let Some(path) = &f.path {
            if state.is_cut(path) {
                return ffi::SQLITE_IOERR_TRUNCATE;
            }
            let rc = remember(
                &mut state,
                f,
                m,
                path,
                u64::try_from(size).expect("non-negative"),
                u64::MAX,
            );
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        (m.xTruncate.expect("xTruncate"))(f.real, size)
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        let mut state = state();
        if let Some(path) = &f.path
            && state.is_cut(path)
        {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        let rc = (m.xSync.expect("xSync"))(f.real, flags);
        if rc == ffi::SQLITE_OK
            && let Some(path) = &f.path
        {
            state.unsynced.remove(&**path);
            *state.syncs.entry((**path).clone()).or_default() += 1;
        }
        rc
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xFileSize.expect("xFileSize"))(f.real, size)
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xLock.expect("xLock"))(f.real, level)
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xUnlock.expect("xUnlock"))(f.real, level)
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xCheckReservedLock.expect("xCheckReservedLock"))(f.real, out)
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        if op == ffi::SQLITE_FCNTL_SIZE_HINT {
            // The unix VFS may grow the file for a size hint without a write.
            if let Some(path) = &f.path {
                let mut state = state();
                if state.is_cut(path) {
                    return ffi::SQLITE_IOERR_TRUNCATE;
                }
                let rc = remember(&mut state, f, m, path, u64::MAX, u64::MAX);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                return (m.xFileControl.expect("xFileControl"))(f.real, op, arg);
            }
        }
        (m.xFileControl.expect("xFileControl"))(f.real, op, arg)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xSectorSize.expect("xSectorSize"))(f.real)
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xDeviceCharacteristics.expect("xDeviceCharacteristics"))(f.real)
    }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xShmMap.expect("xShmMap"))(f.real, page, size, extend, out)
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xShmLock.expect("xShmLock"))(f.real, offset, n, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    unsafe {
        let (f, m) = parts(file);
        (m.xShmBarrier.expect("xShmBarrier"))(f.real);
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xShmUnmap.expect("xShmUnmap"))(f.real, delete)
    }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xFetch.expect("xFetch"))(f.real, offset, amt, out)
    }
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    unsafe {
        let (f, m) = parts(file);
        (m.xUnfetch.expect("xUnfetch"))(f.real, offset, page)
    }
}
