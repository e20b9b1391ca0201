"""The jobs behind the `vocolab` command: the main job (quickstart), checkpoint
evaluation, and the resumable studies (sweep, distill, temporal, mod, scaling), each a
thin runner over the shared plumbing in `common` and `cells`."""
