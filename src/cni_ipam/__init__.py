"""cni-ipam: IP address management for the secondary networks of pods.

Plugin executables import this package on every CNI call, so nothing here
may import more than the standard library, and only what a command needs.
"""

__version__ = "0.1.0"


class _CodeBundle:
    """Serves ``cni_ipam.*`` modules from the code bundle ``cni-ipam install`` writes (cni_ipam.code_bundle):
    one open file and one ``stat`` per module instead of importlib's path search and ``.pyc`` reading.

    A module is served only while its source's mtime and size are those it was compiled from; otherwise, or
    when anything about its entry is wrong, :meth:`find_spec` says None and the normal import runs, so an
    edited source is never shadowed by stale code.  A module it serves has the ``__name__``, ``__file__``,
    ``__path__``, ``__package__``, ``__cached__`` and ``__spec__.origin`` a normal import would give it.
    """

    def __init__(self, path: str, fd: int, package_dir: str, index: dict) -> None:
        self.path = path
        self.fd = fd  # kept open: the offsets are into this file, even if an install replaces it meanwhile
        self.package_dir = package_dir
        self.index = index

    @classmethod
    def open(cls, package_dir: str):
        """The finder over ``package_dir``'s bundle, or None when there is none for this interpreter."""
        import marshal
        import posix
        import sys

        path = f"{package_dir}/__pycache__/bundle.{sys.implementation.cache_tag}.bin"
        try:
            fd = posix.open(path, posix.O_RDONLY)
        except OSError:
            return None
        try:
            header = posix.pread(fd, 16, 0)
            if header[:8] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER + b"cnb1":
                start, length = int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little")
                index = marshal.loads(posix.pread(fd, length, start))
                if type(index) is dict:
                    return cls(path, fd, package_dir, index)
        except Exception:  # truncated or corrupt: the normal imports do it all
            pass
        posix.close(fd)
        return None

    def find_spec(self, name, path=None, target=None):
        entry = self.index.get(name)
        if entry is None:
            return None
        try:
            return self._spec(name, *entry)
        except Exception:  # a source gone, a corrupt entry: the normal import does it (or says why it cannot)
            return None

    def _spec(self, name, is_package, relative, mtime_ns, size, offset, length):
        import _imp
        import marshal
        import posix
        import sys

        origin = f"{self.package_dir}/{relative}"
        source = posix.stat(origin)
        if source.st_mtime_ns != mtime_ns or source.st_size != size:
            return None
        code = marshal.loads(posix.pread(self.fd, length, offset))  # cut short: EOFError
        if type(code) is not type(_serve_from_code_bundle.__code__):  # types.CodeType, without importing types
            return None
        _imp._fix_co_filename(code, origin)  # as importlib does for a .pyc: the package may have been moved
        spec = type(__spec__)(name, self, origin=origin, loader_state=code, is_package=is_package)
        spec.has_location = True  # __file__ (and __cached__, the .pyc path a normal import names) are set
        if is_package:
            spec.submodule_search_locations = [origin.rpartition("/")[0]]
        if sys.flags.verbose:
            print(f"# {name}: code object from {self.path!r}", file=sys.stderr)
        return spec

    def create_module(self, spec):
        return None  # a plain module, as for any source file

    def exec_module(self, module) -> None:
        code, module.__spec__.loader_state = module.__spec__.loader_state, None
        exec(code, module.__dict__)

    def get_code(self, name):
        """For runpy (``python -I -m cni_ipam.cli``), which runs a module's code itself."""
        spec = self.find_spec(name)
        return spec.loader_state if spec is not None else None


def _serve_from_code_bundle() -> None:
    """In a plugin launcher (isolated: cni_ipam.cni.skel.in_launcher; no -O: the bundle holds code for none),
    import our modules through the code bundle.  Nothing else changes how it imports."""
    import sys

    if sys.flags.isolated and not sys.flags.optimize:
        finder = _CodeBundle.open(__path__[0])
        if finder is not None:
            sys.meta_path.insert(0, finder)


_serve_from_code_bundle()
