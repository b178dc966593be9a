//! Wire compatibility: our `csi.proto` must describe exactly the messages,
//! fields, enums and services of the CSI v1.12.0 reference. Comments and
//! file-level options (go_package) are the only allowed differences.

use std::path::{Path, PathBuf};

use prost_types::{DescriptorProto, FileDescriptorProto};

/// The reference `csi.proto`, or why it cannot be found.
fn reference_proto() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("CSI_REFERENCE_PROTO") {
        return Ok(PathBuf::from(path));
    }
    let beside_checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/csi-spec-v1.12.0/csi.proto");
    if beside_checkout.exists() {
        Ok(beside_checkout)
    } else {
        Err(format!(
            "no CSI reference proto at {} (set CSI_REFERENCE_PROTO)",
            beside_checkout.display()
        ))
    }
}

fn compile(path: &Path) -> FileDescriptorProto {
    let dir = path.parent().expect("proto path has a parent");
    let name = path.file_name().expect("proto path has a file name");
    let mut set = protox::compile([name], [dir]).expect("proto compiles");
    let mut file = set
        .file
        .pop()
        .expect("compiled set holds the file itself last");
    // Not part of the wire contract.
    file.name = None;
    file.options = None;
    file.source_code_info = None;
    file
}

fn compare_message(path: &str, ours: &DescriptorProto, reference: &DescriptorProto) {
    assert_eq!(ours.name, reference.name, "{path}: message name");
    let names = |m: &DescriptorProto| m.field.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(ours), names(reference), "{path}: field list");
    for (a, b) in ours.field.iter().zip(&reference.field) {
        assert_eq!(a, b, "{path}.{}: field differs", b.name());
    }
    assert_eq!(ours.enum_type, reference.enum_type, "{path}: nested enums");
    assert_eq!(ours.oneof_decl, reference.oneof_decl, "{path}: oneofs");
    assert_eq!(
        ours.nested_type.len(),
        reference.nested_type.len(),
        "{path}: nested message count"
    );
    for (a, b) in ours.nested_type.iter().zip(&reference.nested_type) {
        compare_message(&format!("{path}.{}", b.name()), a, b);
    }
    assert_eq!(ours, reference, "{path}: message differs");
}

#[test]
fn csi_proto_matches_the_reference_field_by_field() {
    let reference_path = cairn_harness::require!(reference_proto());
    let ours = compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join("csi.proto"));
    let reference = compile(&reference_path);

    assert_eq!(ours.package.as_deref(), Some("csi.v1"));
    assert_eq!(ours.package, reference.package, "package");
    assert_eq!(ours.dependency, reference.dependency, "imports");
    assert_eq!(ours.extension, reference.extension, "extensions");
    assert_eq!(ours.enum_type, reference.enum_type, "top-level enums");

    let names = |f: &FileDescriptorProto| {
        f.message_type
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ours), names(&reference), "message list");
    for (a, b) in ours.message_type.iter().zip(&reference.message_type) {
        compare_message(b.name(), a, b);
    }
    assert_eq!(ours.service, reference.service, "services and methods");
    assert!(
        reference.message_type.len() > 70,
        "reference looks complete"
    );
    // Whatever the loops above did not name must match too.
    assert_eq!(ours, reference);
}
