//! The constrained strings of the wire format, as OpenAPI schemas: each says
//! exactly what the core's validator of that value accepts (see
//! `buildpeer_core::model`, `buildpeer_core::upload`), so that a client can
//! check a request before sending it. Request DTOs point at them with
//! `#[schema(value_type = …)]`.
//!
//! Most validators trim their input first (Rust's `str::trim`: Unicode
//! `White_Space`), so the patterns allow that whitespace around the value.
//! The classes below spell it out rather than use `\s`, whose meaning
//! differs between regex dialects.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

/// What `str::trim` removes (Unicode `White_Space`).
macro_rules! ws {
    () => {
        r"[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    };
}

/// One character that is neither whitespace (as `trim` sees it) nor a control
/// character (`char::is_control`): how a trimmed value starts and ends.
macro_rules! solid {
    () => {
        r"[^\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    };
}

/// A display name (`model::Name`): 1 to 200 characters once trimmed, none a
/// control character.
pub const NAME_PATTERN: &str = concat!(
    "^",
    ws!(),
    "*",
    solid!(),
    r"(?:[^\x00-\x1f\x7f-\x9f]{0,198}",
    solid!(),
    ")?",
    ws!(),
    "*$"
);

/// A postal address (`model::Address`): 1 to 500 characters once trimmed,
/// none a control character but line feeds.
pub const ADDRESS_PATTERN: &str = concat!(
    "^",
    ws!(),
    "*",
    solid!(),
    r"(?:[^\x00-\x09\x0b-\x1f\x7f-\x9f]{0,498}",
    solid!(),
    ")?",
    ws!(),
    "*$"
);

/// A project code (`model::ProjectCode`): 1 to 40 letters, digits, `-`,
/// `_`, `.` or `/` once trimmed.
pub const PROJECT_CODE_PATTERN: &str = concat!("^", ws!(), "*[A-Za-z0-9._/-]{1,40}", ws!(), "*$");

/// One label of an e-mail domain: not empty, no `-` at either end.
macro_rules! label {
    () => {
        concat!(
            r"[^@.\-\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
            r"(?:[^@.\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
            r"[^@.\-\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?"
        )
    };
}

/// An e-mail address (`model::Email`), once trimmed: at most 254 characters
/// without whitespace or control characters; a local part of 1 to 64
/// characters, `@`, and a domain of at least two labels.
pub const EMAIL_PATTERN: &str = concat!(
    "^",
    ws!(),
    "*(?=",
    r"[^\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{3,254}",
    ws!(),
    "*$)",
    r"[^@\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}@",
    label!(),
    r"(?:\.",
    label!(),
    ")+",
    ws!(),
    "*$"
);

/// The essences `upload::ContentType` accepts, its aliases included, in
/// any ASCII case.
macro_rules! content_types {
    () => {
        concat!(
            "(?:[Ii][Mm][Aa][Gg][Ee]/(?:",
            "[Jj][Pp][Ee]?[Gg]|[Pp][Jj][Pp][Ee][Gg]|[Pp][Nn][Gg]|[Ww][Ee][Bb][Pp]",
            "|[Hh][Ee][Ii][CcFf](?:-[Ss][Ee][Qq][Uu][Ee][Nn][Cc][Ee])?",
            "|[Gg][Ii][Ff]|[Tt][Ii][Ff][Ff])",
            "|[Aa][Pp][Pp][Ll][Ii][Cc][Aa][Tt][Ii][Oo][Nn]/[Pp][Dd][Ff])"
        )
    };
}

/// A media type on the allowlist (`upload::ContentType`): its essence,
/// trimmed and in any case, then optionally `;` and parameters (ignored).
pub const CONTENT_TYPE_PATTERN: &str =
    concat!("^", ws!(), "*", content_types!(), ws!(), r"*(?:;[\s\S]*)?$");

/// Whitespace that `upload::Filename` trims: control characters (tabs and
/// line breaks among them) become `_` before it trims.
macro_rules! soft_ws {
    () => {
        r"[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    };
}

/// A filename (`upload::Filename`) is refused only when nothing is left once
/// surrounding whitespace and leading dots are dropped: it must hold a
/// character that is neither, or a dot after inner whitespace. Unanchored.
pub const FILENAME_PATTERN: &str = concat!(
    r"[^. \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]|\.",
    soft_ws!(),
    r"+\."
);

/// A SHA-256 (`upload::Sha256Hex`): 64 hexadecimal digits in either case,
/// once trimmed.
pub const SHA256_PATTERN: &str = concat!("^", ws!(), "*[0-9A-Fa-f]{64}", ws!(), "*$");

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// A page cursor (`pagination`): 16 bytes in unpadded URL-safe base64, or
/// empty (the first page).
pub const CURSOR_PATTERN: &str = "^(?:[A-Za-z0-9_-]{21}[AQgw])?$";

macro_rules! wire_string {
    ($(#[$meta:meta])* $name:ident => $schema:expr) => {
        $(#[$meta])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

wire_string!(
    /// See [`NAME_PATTERN`].
    Name => string("A name: 1 to 200 characters without control characters, \
        once surrounding whitespace is trimmed (it is stored trimmed).")
        .pattern(Some(NAME_PATTERN))
        .examples(["Torre Norte"])
);

wire_string!(
    /// See [`ADDRESS_PATTERN`].
    Address => string("A postal address: 1 to 500 characters without control characters \
        but line feeds, once surrounding whitespace is trimmed (it is stored trimmed).")
        .pattern(Some(ADDRESS_PATTERN))
        .examples(["Av. Reforma 100, CDMX"])
);

wire_string!(
    /// See [`PROJECT_CODE_PATTERN`].
    ProjectCode => string("A project code, unique in the tenant: 1 to 40 letters, digits, \
        `-`, `_`, `.` or `/`, once surrounding whitespace is trimmed (it is stored trimmed).")
        .pattern(Some(PROJECT_CODE_PATTERN))
        .examples(["OBR-2026-014"])
);

wire_string!(
    /// See [`EMAIL_PATTERN`].
    Email => string("An e-mail address, trimmed and lower-cased before it is stored \
        (unique per tenant, case-insensitively): no whitespace or control characters, \
        at most 254 bytes of UTF-8 with a local part of at most 64, and a domain of \
        dot-separated labels, none empty or starting or ending with `-`.")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .pattern(Some(EMAIL_PATTERN))
        .examples(["juan@demo.local"])
);

wire_string!(
    /// `model::Password`: counted in characters at the low end, in bytes at the high one.
    Password => string("A password: at least 8 characters and at most 1024 bytes of UTF-8.")
        .min_length(Some(8))
        .max_length(Some(1024))
        .examples(["obra-segura-1"])
);

wire_string!(
    /// See [`CONTENT_TYPE_PATTERN`].
    ContentType => string("The file's media type. Accepted: image/jpeg (also image/jpg and \
        image/pjpeg), image/png, image/webp, image/heic (also image/heic-sequence), \
        image/heif (also image/heif-sequence), image/gif, image/tiff and application/pdf, \
        in any case and with any parameters, which are dropped. Anything else is refused \
        with 415 `unsupported_type`.")
        .pattern(Some(CONTENT_TYPE_PATTERN))
        .examples(["image/jpeg"])
);

wire_string!(
    /// See [`FILENAME_PATTERN`].
    Filename => string("The file's name on the user's device, kept as metadata only: \
        path separators and control characters become `_`, surrounding whitespace and \
        leading dots are dropped, and it is cut to 255 bytes. Refused when nothing is left.")
        .pattern(Some(FILENAME_PATTERN))
        .examples(["foto-obra.jpg"])
);

wire_string!(
    /// See [`SHA256_PATTERN`].
    Sha256 => string("A SHA-256 digest: 64 hexadecimal digits (stored in lower case).")
        .pattern(Some(SHA256_PATTERN))
        .examples(["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
);

wire_string!(
    /// See [`IDEMPOTENCY_KEY_PATTERN`].
    IdempotencyKey => string("Makes a creation safe to retry: the same key (per user) with \
        the same request answers what the first one created (200, or 201 for a membership); \
        with a different request it is refused (`idempotency_key_reused`). \
        1 to 255 visible ASCII characters.")
        .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
        .examples(["2f6e1c0a-7d1b-4c55-9a8e-0b7f3e1d2c44"])
);

wire_string!(
    /// See [`CURSOR_PATTERN`].
    Cursor => string("The `next_cursor` of the previous page (opaque); empty or absent \
        for the first page.")
        .pattern(Some(CURSOR_PATTERN))
);

wire_string!(
    /// Bytes of a file, as a request or response body.
    Binary => ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
);
