"""Errors a user can cause. Each carries the field (a dotted key, a file, a spec path) it is about,
so the CLI can print one line and exit 2 and the notebook shows one readable line."""


class ReidSweepError(Exception):
    """Base of every user-facing error: ``str(err)`` is ``"<field>: <what was expected>"``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: a notebook's error cell is one readable line.
        return [f"{type(self).__name__}: {self}"]


class ConfigError(ReidSweepError):
    """A config file, key or value is wrong."""


class DatasetError(ReidSweepError):
    """A dataset directory or file is missing or unreadable."""


class SpecError(ReidSweepError):
    """A sweep spec is wrong."""


class SweepStateError(ReidSweepError):
    """A sweep cannot be found or resumed as asked."""


# A sweep spec or YACS file is a few kilobytes; these bound what a hostile one can cost before it is
# read ("billion laughs": a few lines of nested aliases that expand to 10^9 nodes).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # after expanding aliases


def _expanded_nodes(node, limit: int) -> int:
    """How many nodes the YAML graph has once every alias is expanded, counting up to ``limit``
    (shared nodes are counted once per reference, each subtree measured once)."""
    import yaml

    sizes: dict[int, int] = {}

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = limit + 1  # a node met again while being measured: a cycle, never finite
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        sizes[id(n)] = total = min(total, limit + 1)
        return total

    return size(node)


def read_yaml(path, error: type[ReidSweepError], what: str):
    """A YAML file's content, or ``error`` naming the file: missing, not UTF-8/UTF-16 text, not YAML
    (with its line), too large, or aliases that would expand past ``MAX_YAML_NODES``."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(str(path), f"{what} not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise error(str(path), f"{path.stat().st_size} bytes: a {what} is at most {MAX_YAML_BYTES} bytes")
    loader = None
    try:
        loader = yaml.SafeLoader(path.read_bytes())  # bytes: PyYAML reads UTF-8, or UTF-16 with its BOM
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise error(str(path), f"its aliases expand to over {MAX_YAML_NODES} nodes; write the values out")
        return loader.construct_document(node)
    except yaml.reader.ReaderError as err:
        raise error(str(path), f"not UTF-8 text ({err.reason} at byte {err.position}); save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(str(path), f"not valid YAML{where} ({getattr(err, 'problem', None) or err})") from None
    except RecursionError:
        raise error(str(path), "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
