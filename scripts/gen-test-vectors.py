#!/usr/bin/env python3
"""Generate independent test vectors for idstream-core, using only Python's standard library.

Python's own `json` module is the reference for Didit's `X-Signature-V2` canonical JSON:

    json.dumps(shorten_floats(json.loads(body)), sort_keys=True,
               separators=(",", ":"), ensure_ascii=False)

so every expectation written here comes from CPython, not from the Rust code under test.

Writes (relative to the repository root):
  crates/idstream-core/tests/data/canonical-vectors.json   valid inputs + canonical form + HMACs
  crates/idstream-core/tests/data/canonical-invalid.json   inputs that must be rejected
  crates/idstream-core/tests/data/standard-vectors.json    Standard Webhooks v1 signatures
  crates/idstream-core/tests/data/didit-webhook-fixtures.json   copy of shared/reference fixtures
  crates/idstream-core/tests/data/didit-reencoded.json     fixture bodies re-encoded with whitespace

Deterministic: a fixed seed, so re-running produces identical files.
Usage: python3 scripts/gen-test-vectors.py   (from anywhere; paths are relative to this file)
"""

import base64
import hashlib
import hmac
import json
import os
import random

SEED = 20240917
VECTOR_SECRET = b"vector-secret"
RANDOM_CASES = 260

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "crates", "idstream-core", "tests", "data")
SHARED_FIXTURES = os.path.join(ROOT, "..", "shared", "reference", "didit-webhook-fixtures.json")


# --------------------------------------------------------------------------------------------
# The reference canonicaliser (Didit's signer, per shared/reference/webhook-formats.md)
# --------------------------------------------------------------------------------------------


def shorten_floats(x):
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, dict):
        return {k: shorten_floats(v) for k, v in x.items()}
    if isinstance(x, list):
        return [shorten_floats(v) for v in x]
    return x


def canonical(text):
    return json.dumps(
        shorten_floats(json.loads(text)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def hmac_hex(key, msg):
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------
# A randomised JSON writer: same value, many spellings
# --------------------------------------------------------------------------------------------

SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def u_escape(rng, cp):
    s = "\\u%04x" % cp
    return s.upper().replace("\\U", "\\u") if rng.random() < 0.3 else s


def write_char(rng, ch):
    cp = ord(ch)
    must_escape = ch in '"\\' or cp < 0x20
    r = rng.random()
    if not must_escape and r < 0.75:
        return ch
    if ch == "/" and r < 0.9:
        return "\\/"
    if ch in SHORT_ESCAPES and r < 0.9:
        return SHORT_ESCAPES[ch]
    if cp > 0xFFFF:
        v = cp - 0x10000
        return u_escape(rng, 0xD800 + (v >> 10)) + u_escape(rng, 0xDC00 + (v & 0x3FF))
    return u_escape(rng, cp)


def write_string(rng, s):
    return '"' + "".join(write_char(rng, c) for c in s) + '"'


def write_float(rng, f):
    choice = rng.randrange(6)
    if choice == 0:
        return "%.17g" % f  # long mantissa; may look like an integer (e.g. "100")
    if choice == 1:
        return "%.17E" % f
    if choice == 2:
        return ("%.16e" % f).replace("e+", "e")
    if choice == 3 and f.is_integer() and abs(f) < 1e300:
        return "%d.0" % int(f)
    return repr(f)


def ws(rng):
    return rng.choices(["", " ", "\n", "\t", "\r\n", "  ", "\n    "], weights=[12, 4, 2, 1, 1, 1, 1])[0]


def write_value(rng, v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if abs(v) < 2**60 and rng.random() < 0.05:
            return "%d.0" % v  # an integral float: shorten_floats turns it back into an int
        return str(v)
    if isinstance(v, float):
        return write_float(rng, v)
    if isinstance(v, str):
        return write_string(rng, v)
    if isinstance(v, list):
        if not v:
            return "[" + ws(rng) + "]"
        items = [ws(rng) + write_value(rng, x) + ws(rng) for x in v]
        return "[" + ",".join(items) + "]"
    if isinstance(v, dict):
        members = list(v.items())
        # Occasionally repeat a key with a different, earlier value (the last one wins).
        if members and rng.random() < 0.15:
            k, _ = rng.choice(members)
            members.insert(0, (k, rand_scalar(rng)))
        if not members:
            return "{" + ws(rng) + "}"
        parts = [
            ws(rng) + write_string(rng, k) + ws(rng) + ":" + ws(rng) + write_value(rng, x) + ws(rng)
            for k, x in members
        ]
        return "{" + ",".join(parts) + "}"
    raise TypeError(type(v))


def render(rng, v):
    """Turns a value into JSON text in one of several styles."""
    style = rng.randrange(5)
    if style == 0:
        return json.dumps(v)  # ", " / ": " separators, ASCII escapes
    if style == 1:
        return json.dumps(v, indent=rng.choice([1, 2, 4, "\t"]), ensure_ascii=rng.random() < 0.5)
    if style == 2:
        return json.dumps(v, ensure_ascii=False, sort_keys=rng.random() < 0.5, separators=(",", ":"))
    return ws(rng) + write_value(rng, v) + ws(rng)


# --------------------------------------------------------------------------------------------
# Random values
# --------------------------------------------------------------------------------------------

CHAR_POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:;,!?@#$%&*()[]{}<>=+'`~^|")
    + ['"', "\\", "/", "\x7f", "\u0080", "\u00a0"]
    + [chr(c) for c in range(0x20)]
    + list("éèüÜößñçÅøÆœ")  # accents
    + list("北京東京한국語中文")  # CJK / Hangul
    + list("שלוםمرحبا")  # RTL
    + ["e\u0301", "\u200b", "\u200d", "\u2028", "\u2029", "\ufeff", "\ufffd", "\uffff", "\ue000"]
    + ["😀", "🎉", "👍🏽", "𝄞", "𠀀", "\U0010ffff", "\U0001f1eb\U0001f1f7"]  # supplementary planes
)

KEY_POOL = [
    "a", "b", "A", "B", "z", "Z", "_", "-", "0", "1", "2", "9", "10", "100", "1e3", "1E3", "-1",
    "é", "É", "e", "E", "ß", "ss", "ñ", "北", "京", "😀", "🎉", "\ue000", "\uffff", "\ufb00",
    "", " ", "a b", "a/b", 'q"uote', "back\\slash", "tab\t", "nl\n", "\x00", "\x1f", "\x7f",
    "status", "session_id", "vendor_data", "decision", "metadata", "timestamp", "webhook_type",
    "Status", "STATUS", "statuS", "status ",
]

SPECIAL_FLOATS = [
    0.1, 0.2, 0.3, 96.15, 95.4, 1e-5, 1e-7, 1.5e16, 1e16, 1e22, 1e23, 123456789.123, -0.0, 0.0,
    5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 2.2250738585072014e-308, 100.0,
    2.5e3, 1e-4, 0.0001, 0.00011, 9.999e-5, 1e15, 1e15 + 0.5, 4503599627370495.5,
    9007199254740992.0, 9007199254740994.0, 1 / 3, 2 / 3, 3.141592653589793, -2.718281828459045,
    1e100, 1e-100, 0.5, -0.5, 12.0, -12.0, 1.0000000000000002, 0.30000000000000004,
    2119513591211832.25, 2119513591211832.75, 20123439888513.0625, 30108581798608.8125,
]


def rand_float(rng):
    r = rng.random()
    if r < 0.3:
        return rng.choice(SPECIAL_FLOATS)
    if r < 0.5:
        # Typical scores: a few decimals.
        return round(rng.uniform(-1000, 1000), rng.randrange(0, 5))
    if r < 0.7:
        return rng.random() * 10.0 ** rng.randint(-30, 30)
    if r < 0.75:
        return float(rng.randint(-(2**60), 2**60))  # integral float
    if r < 0.8:
        # Exactly representable values with 17-18 significant digits (repr rounding ties).
        scale = rng.choice([4, 8, 16])
        return rng.randint(2**44, 2**51) / scale
    # Arbitrary bit patterns: normal or subnormal, finite.
    mant = rng.getrandbits(52)
    if rng.random() < 0.1:
        f = float.fromhex("0x0.%013xp-1022" % mant)
    else:
        f = float.fromhex("0x1.%013xp%d" % (mant, rng.randint(-1022, 1023)))
    return -f if rng.random() < 0.5 else f


def rand_int(rng):
    r = rng.random()
    if r < 0.5:
        return rng.randint(-1000, 1000)
    if r < 0.7:
        return rng.randint(-(2**63), 2**64)
    if r < 0.9:
        return rng.choice([2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, -(2**63) - 1, 10**30])
    return rng.randint(-(10**60), 10**60)


def rand_string(rng, max_len=12):
    return "".join(rng.choice(CHAR_POOL) for _ in range(rng.randrange(0, max_len + 1)))


def rand_key(rng):
    return rng.choice(KEY_POOL) if rng.random() < 0.6 else rand_string(rng, 6)


def rand_scalar(rng):
    r = rng.random()
    if r < 0.3:
        return rand_string(rng)
    if r < 0.55:
        return rand_int(rng)
    if r < 0.85:
        return rand_float(rng)
    return rng.choice([None, True, False])


def rand_value(rng, depth):
    r = rng.random()
    if depth <= 0 or r < 0.45:
        return rand_scalar(rng)
    if r < 0.75:
        return {rand_key(rng): rand_value(rng, depth - 1) for _ in range(rng.randrange(0, 6))}
    return [rand_value(rng, depth - 1) for _ in range(rng.randrange(0, 5))]


def rand_document(rng):
    depth = rng.randint(1, 5)
    if rng.random() < 0.85:
        return {rand_key(rng): rand_value(rng, depth) for _ in range(rng.randrange(1, 8))}
    return rand_value(rng, depth)


# --------------------------------------------------------------------------------------------
# Hand-written cases (input text exactly as written)
# --------------------------------------------------------------------------------------------


def deep(n):
    text = ""
    for i in range(n):
        text += '{"k%d" : [' % i if i % 2 == 0 else "\n{ \"x\": 1, \"inner\" :"
    text += ' "bottom\\u00e9" '
    for i in reversed(range(n)):
        text += "] }" if i % 2 == 0 else "}\n"
    return text


def hand_cases():
    big = "1" + "234567890" * 10
    return [
        # Structure and whitespace
        ("empty_object", "{}"),
        ("empty_array", "[]"),
        ("empty_object_ws", " \t\r\n{ \t\r\n} \t\r\n"),
        ("empty_array_ws", "[\n\n]"),
        ("nested_empties", '{"a":{},"b":[],"c":[{}],"d":{"e":{"f":{}}},"g":[[],[[]]]}'),
        ("nested_empties_spaced", '{ "a" : { } , "b" : [ ] , "c" : [ { } , [ ] ] }'),
        ("sorted_already", '{"a":1,"b":2}'),
        ("unsorted", '{"b":1,"a":2}'),
        ("recursive_sort", '{"z":{"y":1,"x":[{"b":1,"a":2}]},"a":null}'),
        ("array_order_kept", '[3,1,2,{"b":0,"a":0}]'),
        ("ws_everywhere", ' {\n\t"b" :\t1 ,\r\n"a":\n[ 1 ,2\t,  3 ] }  '),
        ("crlf_indent", '{\r\n  "a": 1,\r\n  "b": [\r\n    true,\r\n    false\r\n  ]\r\n}\r\n'),
        ("top_level_string", '"just a string"'),
        ("top_level_number", " 42 "),
        ("top_level_float", "4.20"),
        ("top_level_null", "null"),
        ("top_level_true", "\ttrue\n"),
        ("top_level_false", "false"),
        ("literals_in_array", "[null,true,false,null]"),
        ("deep_50", deep(50)),
        ("deep_arrays_60", "[" * 60 + "1" + "]" * 60),
        ("deep_objects_45", '{"a":' * 45 + "{}" + "}" * 45),
        # Duplicate keys: the last value wins, position is irrelevant after sorting
        ("dup_keys", '{"a":1,"a":2}'),
        ("dup_keys_three", '{"a":1,"b":0,"a":2,"a":{"x":3}}'),
        ("dup_keys_nested", '{"o":{"k":"first","k":"second"},"o2":[{"k":1,"k":null}]}'),
        ("dup_keys_via_escape", '{"a":1,"\\u0061":2}'),
        ("dup_keys_object_then_scalar", '{"a":{"deep":[1,2]},"a":3}'),
        # Keys and code-point order
        ("numeric_keys", '{"10":1,"9":2,"1e3":3,"100":4,"2":5,"-1":6,"0":7,"01":8}'),
        ("case_keys", '{"b":1,"B":2,"a":3,"A":4,"_":5,"-":6,"~":7}'),
        ("accented_keys", '{"é":1,"e":2,"z":3,"É":4,"E":5,"ß":6,"ss":7,"\\u00f1":8}'),
        ("emoji_keys", '{"😀":1,"\\ud83c\\udf89":2,"a":3,"\\uffff":4,"\\ue000":5,"\\ufb00":6}'),
        ("cjk_keys", '{"北京":1,"东京":2,"京":3,"한국":4}'),
        ("empty_key", '{"":1,"a":2," ":3}'),
        ("keys_with_escapes", '{"tab\\t":1,"nl\\n":2,"q\\"":3,"b\\\\":4,"\\u0000":5,"\\/":6}'),
        ("key_prefixes", '{"ab":1,"a":2,"abc":3,"a\\u0000":4}'),
        # Strings and escapes
        ("all_short_escapes", '["\\"","\\\\","\\/","\\b","\\f","\\n","\\r","\\t"]'),
        ("all_controls_escaped", json.dumps("".join(chr(c) for c in range(0x20)))),
        ("controls_u_escaped_upper", '"' + "".join("\\u%04X" % c for c in range(0x20)) + '"'),
        ("del_and_c1", '["\\u007f","\x7f","\\u0080","\\u009f","\\u00a0"]'),
        ("slash_plain_and_escaped", '{"url":"https://example.com/a/b","esc":"https:\\/\\/example.com\\/a"}'),
        ("quote_backslash_mix", r'"a\"b\\c\\\"d"'),
        ("u_escapes_ascii", '"\\u0041\\u0062\\u0063"'),
        ("u_escapes_mixed_case_hex", '"\\u00E9\\u00e9\\u4E2D\\u4e2d\\uABCD"'),
        ("accents_literal", '{"name":"José Müller-Ünlü","city":"Zürich","x":"ñ ç ø Å œ"}'),
        ("accents_escaped", '{"name":"Jos\\u00e9 M\\u00fcller-\\u00dcnl\\u00fc"}'),
        ("cjk_literal", '{"place_of_birth":"北京","jp":"東京都","kr":"서울"}'),
        ("cjk_escaped", '{"place_of_birth":"\\u5317\\u4eac"}'),
        ("emoji_literal", '{"e":"😀🎉👍🏽🇫🇷"}'),
        ("emoji_surrogate_pairs", '{"e":"\\ud83d\\ude00\\ud83c\\udf89\\ud83d\\udc4d\\ud83c\\udffd"}'),
        ("surrogate_pair_upper_hex", '"\\uD83D\\uDE00 \\uD834\\uDD1E"'),
        ("supplementary_extremes", '["\\ud800\\udc00","\\udbff\\udfff","\U00010000","\U0010ffff"]'),
        ("bmp_extremes", '["\\uffff","\\ufffe","\\ufeff","\\ufffd","\\ue000","\\uf8ff"]'),
        ("line_separators", '["\\u2028","\u2029","a\u2028b"]'),
        ("combining_and_zero_width", '["e\\u0301","e\u0301","a\\u200bb","\\u200d"]'),
        ("rtl", '{"he":"שלום","ar":"\\u0645\\u0631\\u062d\\u0628\\u0627"}'),
        ("null_char_escaped", '"a\\u0000b"'),
        ("long_string", json.dumps("x" * 5000 + "é" * 100)),
        ("string_with_json_inside", json.dumps('{"a": [1, 2.0, "\\u00e9"]}')),
        # Numbers: integers
        ("int_zero", "0"),
        ("int_neg_zero", "-0"),
        ("int_neg_zero_in_object", '{"a":-0,"b":[-0, 0]}'),
        ("int_small", "[1,-1,42,-42,1000000]"),
        ("int_2_53", "[9007199254740992,9007199254740993,-9007199254740993]"),
        ("int_u64_edges", "[18446744073709551615,18446744073709551616,-9223372036854775808,-9223372036854775809]"),
        ("int_huge", "[%s,-%s]" % (big, big)),
        ("int_1e100", "1" + "0" * 100),
        ("int_4300_digits", "9" * 4300),
        # Numbers: floats
        ("float_0_1", "0.1"),
        ("float_96_15", '{"score":96.15}'),
        ("float_95_4", '{"score":95.4}'),
        ("float_1e-5", "1e-5"),
        ("float_1e-7", "1e-7"),
        ("float_1_5e16", "1.5e16"),
        ("float_1e16", "1e16"),
        ("float_1e22", "1e22"),
        ("float_1e23", "1e23"),
        ("float_123456789_123", "123456789.123"),
        ("float_neg_zero", "-0.0"),
        ("float_neg_zero_exp", "[-0e0,0e0,0.0e-5,-0E+10]"),
        ("float_5e-324", "5e-324"),
        ("float_min_normal", "2.2250738585072014e-308"),
        ("float_max", "1.7976931348623157e308"),
        ("float_neg_max", "-1.7976931348623157e308"),
        ("float_100_0", "100.0"),
        ("float_2_5E+3", "2.5E+3"),
        ("float_exp_forms", "[1e2,1E2,1e+2,1E+2,1.0e2,10e1,0.1e3,1000e-1,1e-0,1e00,1e-00002]"),
        ("float_repr_boundaries", "[0.0001,0.00009999,1e-4,0.00001,1e15,1000000000000000.5]"),
        ("float_non_integral_largest", "4503599627370495.5"),
        ("float_rounds_to_integer", "[9007199254740993.0,0.99999999999999999,1.00000000000000001]"),
        ("float_long_mantissa", "[0.1000000000000000055511151231257827,3.14159265358979323846264338327950288]"),
        ("float_thirds", "[0.3333333333333333,0.6666666666666666,0.30000000000000004]"),
        ("float_tiny", "[1e-300,4.9e-324,2e-323,1e-320]"),
        ("float_underflow_to_zero", "[1e-400,-1e-400]"),
        ("float_negative", "[-0.1,-96.15,-1e-7,-1.5e16,-123456789.123]"),
        ("float_integral_forms", "[1.0,-1.0,12.000,1.2e1,120e-1,3.0e0]"),
        ("float_scores_object", '{"face_matches":[{"score":96.15,"threshold":0}],"liveness":{"score":95.40,"x":100.0}}'),
        # 17-digit repr ties: the exact value is halfway between two 17-digit strings that both
        # round trip; Python's repr takes the even last digit (…832.25 -> …832.2, …832.75 -> …832.8).
        ("float_repr_ties", "[2119513591211832.25,2119513591211832.75,-1125496615054128.25,"
         "20123439888513.0625,20123439888513.1875,30108581798608.8125,-22274195292070.5625,"
         "568216212947645.25,70518666941239.625,1120614825608329.25]"),
        ("float_repr_ties_object", '{"score":2038069528690088.25,"b":597156756684025.25}'),
        ("numbers_mixed_ws", "[ 1 , 2.5 ,\n-3e2\t, 0.000001 ]"),
    ]


# --------------------------------------------------------------------------------------------
# Invalid inputs
# --------------------------------------------------------------------------------------------

INVALID = [
    # Not JSON at all / truncated
    "", " ", "\n\t", "{", "[", "}", "]", '{"a"', '{"a":', '{"a":1', '[1,2', '"abc', '"abc\\',
    '{"a":"b', "tru", "fals", "nul", "t", "-", "1e", "1e+", "1.", "1.e5", ".5", "-.5",
    # Trailing commas and missing parts
    "[1,]", '{"a":1,}', "[,1]", "[1,,2]", '{,"a":1}', '{"a" 1}', '{"a":}', "{:1}", '{"a"::1}',
    "[1 2]", '{"a":1 "b":2}', "{1:2}", "{a:1}", '{null:1}',
    # Quotes
    "'a'", "{'a':1}", "{\"a\":'b'}", "[\"a']",
    # Trailing garbage / multiple documents
    "{} x", "[] []", '{"a":1}}', "1 2", "nulll", "truex", '"a" "b"', "{}\x00", "[1]]", "0x10",
    # Numbers Python refuses
    "01", "-01", "00", "+1", "1_000", "0x1F", "1e5.5", "--1", "1.5.5", ".", "e5",
    # Bad escapes and raw control characters
    '"\\x41"', '"\\U0041"', '"\\u12"', '"\\u12G4"', '"\\u"', '"\\a"', '"\\\'"', '"\\ "', '"\\0"',
    '"a\nb"', '"a\tb"', '"a\rb"', '"\x00"', '"\x1f"', '{"k\x01":1}', '["\x0b"]',
    # Not whitespace in JSON
    "\ufeff{}", "\u00a0{}", "\x0b{}", "\x0c[]", "{}\u3000",
    # Comments
    "// c\n{}", "/* c */ {}", '{"a":1 /* c */}',
    # Lone UTF-16 surrogates: Python accepts them, but they cannot be UTF-8 encoded, so Didit's
    # sender can never sign such a body; we reject them.
    '"\\ud800"', '"\\udbff"', '"\\udc00"', '"\\udfff"', '"\\ud83d"', '"\\ude00\\ud83d"',
    '"\\ud800\\ud800"', '"\\ud800\\u0041"', '"\\ud800x"', '"\\ud83d\\n"', '{"\\ud800":1}',
    '{"a":"ok","b":["\\udc00"]}', '"\\ud83d\\"',
]


def is_rejected(text):
    """True when Python's json.loads refuses `text` or its result has no UTF-8 encoding."""
    try:
        value = json.loads(text)
    except ValueError:
        return True
    try:
        canonical_text = json.dumps(shorten_floats(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        canonical_text.encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return True
    return False


# --------------------------------------------------------------------------------------------
# Standard Webhooks
# --------------------------------------------------------------------------------------------


def standard_sign(key, msg_id, timestamp, body):
    mac = hmac.new(key, ("%s.%d." % (msg_id, timestamp)).encode() + body.encode("utf-8"), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def standard_vectors(rng):
    out = []
    published = {
        "name": "published",
        "secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "id": "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        "timestamp": 1649367553,
        "body": '{"email":"test@example.com","username":"test_user"}',
    }
    published["signature"] = standard_sign(
        base64.b64decode(published["secret"][6:]), published["id"], published["timestamp"], published["body"]
    )
    assert published["signature"] == "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    out.append(published)
    alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    for i in range(20):
        key = bytes(rng.getrandbits(8) for _ in range(rng.randint(24, 64)))
        msg_id = rng.choice(["msg_", "evt_", "", "wh-"]) + "".join(rng.choice(alnum) for _ in range(rng.randint(8, 32)))
        timestamp = rng.randint(1_600_000_000, 1_900_000_000)
        doc = {rand_key(rng): rand_value(rng, 2) for _ in range(rng.randrange(0, 6))}
        doc["type"] = rng.choice(["user.created", "invoice.paid", "verification.completed"])
        body = render(rng, doc)
        out.append(
            {
                "name": "random_%02d" % i,
                "secret": "whsec_" + base64.b64encode(key).decode(),
                "id": msg_id,
                "timestamp": timestamp,
                "body": body,
                "signature": standard_sign(key, msg_id, timestamp, body),
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def write_json(name, value):
    path = os.path.join(DATA, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(value, f, indent=1, ensure_ascii=True)
        f.write("\n")
    return path


def main():
    rng = random.Random(SEED)
    os.makedirs(DATA, exist_ok=True)

    inputs = list(hand_cases())
    for i in range(RANDOM_CASES):
        inputs.append(("random_%03d" % i, render(rng, rand_document(rng))))

    vectors, names = [], set()
    for name, text in inputs:
        assert name not in names, name
        names.add(name)
        assert not is_rejected(text), name
        canon = canonical(text)
        assert "NaN" not in canon and "Infinity" not in canon, name
        vectors.append(
            {
                "name": name,
                "input": text,
                "canonical": canon,
                "v2_hex": hmac_hex(VECTOR_SECRET, canon.encode("utf-8")),
                "raw_hex": hmac_hex(VECTOR_SECRET, text.encode("utf-8")),
            }
        )
    for text in INVALID:
        assert is_rejected(text), "Python accepts %r" % text
    assert len(set(INVALID)) == len(INVALID)

    write_json("canonical-vectors.json", vectors)
    write_json("canonical-invalid.json", INVALID)
    write_json("standard-vectors.json", standard_vectors(rng))

    # Didit's own fixtures: a byte-exact copy, plus each body re-encoded with whitespace (what a
    # re-serialising proxy might forward), which only X-Signature-V2 still authenticates.
    # (When shared/ is not beside the repository, the existing copy is used as is.)
    copy_path = os.path.join(DATA, "didit-webhook-fixtures.json")
    source = SHARED_FIXTURES if os.path.exists(SHARED_FIXTURES) else copy_path
    with open(source, "rb") as f:
        fixtures_bytes = f.read()
    if source != copy_path:
        with open(copy_path, "wb") as f:
            f.write(fixtures_bytes)
    fixtures = json.loads(fixtures_bytes)
    reencoded = {}
    for i, (name, case) in enumerate(sorted(fixtures["cases"].items())):
        body = case["body"]
        pretty = json.dumps(json.loads(body), indent=2 if i % 2 else 4, ensure_ascii=i % 3 == 0)
        assert pretty != body and canonical(pretty) == canonical(body), name
        reencoded[name] = pretty
    write_json("didit-reencoded.json", reencoded)

    print("canonical vectors: %d (%d hand-written, %d random)" % (len(vectors), len(inputs) - RANDOM_CASES, RANDOM_CASES))
    print("invalid inputs: %d" % len(INVALID))
    print("standard vectors: %d" % (1 + 20))
    print("didit fixtures copied: %d cases, re-encoded: %d" % (len(fixtures["cases"]), len(reencoded)))


if __name__ == "__main__":
    main()
