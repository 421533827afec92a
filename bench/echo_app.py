"""The echo endpoint used for the Autobahn|Testsuite run (`make autobahn`)."""

from tether import App

app = App()


@app.websocket("/echo")
async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)
