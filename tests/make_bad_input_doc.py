"""Write the bad-input table of docs/bad_input.md from its source, tests/kernels/test_bad_input_matrix.py.

Run ``python tests/make_bad_input_doc.py`` after changing the table (or an error message); the test
``test_the_docs_show_this_table`` fails until the docs match. Only the part between the table markers is
rewritten; the rest of docs/bad_input.md is prose kept by hand.
"""
import os
import sys


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.join(here, "kernels")]
    import conftest  # noqa: F401  (sets KERAS_BACKEND before anything imports keras)
    import test_bad_input_matrix as matrix

    with open(matrix.DOC, encoding="utf-8") as f:
        text = f.read()
    updated = matrix.doc_with_table(text)
    if updated != text:
        with open(matrix.DOC, "w", encoding="utf-8") as f:
            f.write(updated)
        print(f"updated {os.path.relpath(matrix.DOC)}")
    else:
        print(f"{os.path.relpath(matrix.DOC)} is up to date")


if __name__ == "__main__":
    main()
