"""import-linter contracts that its built-in types cannot express.

import-linter sees an external package only as its top-level name (`tvm`), so "only frontend/ imports
`tvm.relax.frontend`" needs the import's own line: grimp keeps it, and this contract reads it.
"""

from __future__ import annotations

from importlinter import Contract, ContractCheck, fields, output


class ForbiddenExternalSubmoduleContract(Contract):
    """No module outside `allowed_modules` imports `forbidden_prefix` (a dotted path inside an external package)."""

    forbidden_prefix = fields.StringField()
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        top = self.forbidden_prefix.split(".")[0]
        offenders = []
        for importer in sorted(graph.find_modules_that_directly_import(top)):
            if any(importer == a or importer.startswith(a + ".") for a in self.allowed_modules):
                continue
            for detail in graph.get_import_details(importer=importer, imported=top):
                line = detail["line_contents"]
                if self.forbidden_prefix in line:
                    offenders.append(f"{importer}:{detail['line_number']}: {line}")
        return ContractCheck(kept=not offenders, metadata={"offenders": offenders})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["offenders"]:
            output.print_error(f"{line} (only {', '.join(self.allowed_modules)} may import {self.forbidden_prefix})")
