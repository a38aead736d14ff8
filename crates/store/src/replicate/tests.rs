use super::*;
use crate::volume::tests::*;

#[test]
fn issue8_replicate_refuses_an_open_source_and_another_volumes_replica_and_resumes_a_torn_first_run(
) {
    let f = fixture();
    let mb = addr("nina@example.org");
    let v = open(&f);
    fill(&v, &mb, 1, 3);
    let dst = f._tmp.path().join("replica");
    // The source is open: its lock is held.
    assert!(matches!(
        Volume::replicate(&f.dir, &dst),
        Err(StoreError::Busy { .. })
    ));
    drop(v);

    // What an interrupted first run leaves: no header, a stale snapshot and its WAL.
    std::fs::create_dir_all(dst.join(SEGMENTS_DIR)).unwrap();
    std::fs::write(dst.join("index.sqlite.tmp"), b"torn").unwrap();
    std::fs::write(dst.join("index.sqlite.tmp-wal"), b"torn").unwrap();
    std::fs::write(dst.join(SEGMENTS_DIR).join("00000001.seg.tmp"), b"torn").unwrap();
    let out = Volume::replicate(&f.dir, &dst).unwrap();
    assert_eq!(out.segments_copied, 1);
    assert!(!dst.join("index.sqlite.tmp").exists());
    assert!(!dst.join(SEGMENTS_DIR).join("00000001.seg.tmp").exists());
    let r = Volume::open(&dst, &f.key, &settings()).unwrap();
    assert_eq!(read_mailbox(&r, &mb), {
        let v = open(&f);
        read_mailbox(&v, &mb)
    });
    // The replica is open: replicating into it is refused.
    assert!(matches!(
        Volume::replicate(&f.dir, &dst),
        Err(StoreError::Busy { .. })
    ));
    drop(r);

    // A replica of another volume is never overwritten.
    let g = fixture();
    let err = Volume::replicate(&g.dir, &dst).unwrap_err();
    assert!(matches!(err, StoreError::Replica { .. }), "{err}");
    assert!(err.to_string().contains("another volume"));
}
