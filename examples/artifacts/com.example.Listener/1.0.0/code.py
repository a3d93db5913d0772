"""Example component: subscribe to a local topic and to a cloud command topic, and answer pings."""

import json
import os
import sys
import threading

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import QOS


def main() -> None:
    thing = os.environ["AWS_IOT_THING_NAME"]
    ipc_client = GreengrassCoreIPCClientV2()
    heard = {"count": 0}

    def on_counter(event) -> None:
        heard["count"] = event.json_message.message["count"]

    def on_ping(event) -> None:
        request = json.loads(event.message.payload)
        reply = {"pong": request.get("ping"), "lastCountHeard": heard["count"]}
        ipc_client.publish_to_iot_core(
            topic_name=f"dt/example/{thing}/pong", qos=QOS.AT_LEAST_ONCE, payload=json.dumps(reply).encode()
        )

    ipc_client.subscribe_to_topic(topic="example/counter", on_stream_event=on_counter)
    ipc_client.subscribe_to_iot_core(
        topic_name=f"cmd/example/{thing}/ping", qos=QOS.AT_LEAST_ONCE, on_stream_event=on_ping
    )
    ipc_client.update_state(state="RUNNING")
    print("listening", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
