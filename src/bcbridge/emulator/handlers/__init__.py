"""The emulator's operations, one small function each, over the store and the document rules.

`places` turns a routed `Target` into the records it names; `reads`, `writes`, `actions` and
`batch` carry the operations out. Handlers never parse URLs (that is `routing`) and never pick a
status or code for an error (that is `errors`).
"""
