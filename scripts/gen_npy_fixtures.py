#!/usr/bin/python3
"""Write the .npy fixtures of tests/test_npy.c into tests/data/npy/ (deterministic; rerun after changes).

Good files hold np.arange-based values so the tests can check them exactly; bad_*.npy are malformed on
purpose, one defect each. Run from anywhere: /usr/bin/python3 scripts/gen_npy_fixtures.py
"""
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'npy')
MAGIC = b'\x93NUMPY'


def write_good(name, arr, version=(1, 0)):
    with open(os.path.join(OUT, name), 'wb') as f:
        np.lib.format.write_array(f, arr, version=version, allow_pickle=False)


def write_raw(name, data):
    with open(os.path.join(OUT, name), 'wb') as f:
        f.write(data)


def craft(header, data=b'', version=(1, 0), hlen=None):
    """A .npy image with `header` (a dict literal text) padded like NumPy's, or a forced length field."""
    pre = len(MAGIC) + 2 + (2 if version[0] == 1 else 4)
    text = header.encode('latin1')
    text += b' ' * ((-(pre + len(text) + 1)) % 64) + b'\n'
    n = len(text) if hlen is None else hlen
    field = struct.pack('<H', n) if version[0] == 1 else struct.pack('<I', n)
    return MAGIC + bytes(version) + field + text + data


def good_bytes(arr):
    path = os.path.join(OUT, '_tmp.npy')
    write_good('_tmp.npy', arr)
    with open(path, 'rb') as f:
        data = f.read()
    os.remove(path)
    return data


def main():
    os.makedirs(OUT, exist_ok=True)

    # ---- good files ----
    write_good('f4_2x3.npy', np.arange(6, dtype='<f4').reshape(2, 3))             # 0..5
    write_good('f8_5.npy', (np.arange(5, dtype='<f8') * 0.5 - 1.0))               # -1 -0.5 0 0.5 1
    write_good('i4_2x2.npy', np.arange(-2, 2, dtype='<i4').reshape(2, 2))         # -2 -1 0 1
    write_good('i8_3.npy', np.array([-(2 ** 40), 0, 2 ** 40], dtype='<i8'))
    write_good('u1_6.npy', np.arange(0, 256, 51, dtype='|u1'))                    # 0 51 ... 255
    write_good('i1_4.npy', np.array([-128, -1, 0, 127], dtype='|i1'))
    # Fortran order: logically arange(12).reshape(3, 4), stored column-major.
    write_good('fortran_f4_3x4.npy', np.asfortranarray(np.arange(12, dtype='<f4').reshape(3, 4)))
    write_good('fortran_f8_2x3x4.npy', np.asfortranarray(np.arange(24, dtype='<f8').reshape(2, 3, 4)))
    write_good('rank0.npy', np.array(7.5, dtype='<f4'))
    write_good('empty_1d.npy', np.zeros((0,), dtype='<f4'))
    write_good('empty_2x0.npy', np.zeros((2, 0), dtype='<f4'))
    write_good('v2_f4_2x3.npy', np.arange(6, dtype='<f4').reshape(2, 3), version=(2, 0))
    write_good('v3_f4_2x3.npy', np.arange(6, dtype='<f4').reshape(2, 3), version=(3, 0))
    write_good('f4_4d.npy', np.arange(24, dtype='<f4').reshape(1, 2, 3, 4))
    # Hand-written but valid: other key order, double quotes, odd spacing, no trailing comma.
    write_raw('odd_header.npy', craft('{"shape":(3,),"fortran_order" :False,  "descr":"<f4"}',
                                      np.arange(3, dtype='<f4').tobytes()))

    # ---- malformed files ----
    f4 = good_bytes(np.arange(6, dtype='<f4').reshape(2, 3))
    write_raw('bad_magic.npy', b'\x93NUMPZ' + f4[6:])
    write_raw('bad_version.npy', f4[:6] + bytes((4, 0)) + f4[8:])
    write_raw('bad_short.npy', f4[:7])
    write_raw('bad_truncated_header.npy', f4[:40])
    write_raw('bad_header_past_end.npy',
              craft("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", hlen=4000))
    write_raw('bad_truncated_data.npy', f4[:-4])
    write_raw('bad_extra_data.npy', f4 + b'\0\0\0\0')
    data6 = np.arange(6, dtype='<f4').tobytes()
    write_raw('bad_dict_garbage.npy',
              craft("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), garbage}", data6))
    write_raw('bad_dict_not_dict.npy', craft("['descr', '<f4']", data6))
    write_raw('bad_unknown_key.npy',
              craft("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", data6))
    write_raw('bad_missing_key.npy', craft("{'descr': '<f4', 'shape': (2, 3), }", data6))
    write_raw('bad_duplicate_key.npy',
              craft("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", data6))
    write_raw('bad_shape_not_tuple.npy', craft("{'descr': '<f4', 'fortran_order': False, 'shape': (6)}",
                                               data6))
    write_raw('bad_fortran_value.npy', craft("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}",
                                             data6))
    write_good('bad_big_endian.npy', np.arange(6, dtype='>f4').reshape(2, 3))
    write_good('bad_complex.npy', np.arange(2, dtype='<c8'))
    write_raw('bad_structured.npy',
              craft("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data6[:8]))
    write_raw('bad_negative_dim.npy', craft("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }",
                                            data6))
    write_raw('bad_overflow_shape.npy',
              craft("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (2 ** 62, 2 ** 62)))
    write_raw('bad_huge_dim.npy',
              craft("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % 10 ** 20))
    write_raw('bad_rank9.npy', craft("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }"
                                     % ', '.join(['1'] * 9), data6[:4]))
    write_raw('bad_trailing_text.npy',
              craft("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", data6))


if __name__ == '__main__':
    main()
