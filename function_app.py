"""Azure Functions entry point: wires the blueprints, nothing else."""
import azure.functions as func

from functions.console import bp as console_bp
from functions.ingest import bp as ingest_bp
from functions.maintenance import bp as maintenance_bp
from functions.operator import bp as operator_bp
from functions.securescore import bp as securescore_bp
from functions.steps import bp as steps_bp
from functions.streams import bp as streams_bp

app = func.FunctionApp()
app.register_functions(ingest_bp)
app.register_functions(steps_bp)
app.register_functions(operator_bp)
app.register_functions(streams_bp)
app.register_functions(securescore_bp)
app.register_functions(maintenance_bp)
app.register_functions(console_bp)
