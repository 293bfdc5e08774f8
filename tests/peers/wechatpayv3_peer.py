"""An independent WeChat Pay client (wechatpayv3 2.0.4) against o2flow's
fake WeChat Pay server, for tests/api/peers.rs.

    python3 tests/peers/wechatpayv3_peer.py orders BASE_URL NOTIFY_URL
        signs requests with the merchant test key and verifies every answer
        of the fake with the WeChat Pay test public key; prints one JSON
        line per call.
    python3 tests/peers/wechatpayv3_peer.py paid BASE_URL NOTIFY_URL
        the order paid: query, a partial refund, its query.
    python3 tests/peers/wechatpayv3_peer.py certificates BASE_URL
        as above, but the fake signs under its platform certificate: the
        SDK downloads /v3/certificates from the fake and verifies with it.
    python3 tests/peers/wechatpayv3_peer.py callbacks
        reads notifications the fake sent ({"headers", "body"} per line) and
        prints what wechatpayv3's callback() makes of each (null: refused).

TEST ONLY keys from tests/vectors/wechat/.
"""

import json
import sys

from wechatpayv3 import WeChatPay, WeChatPayType

VECTORS = "tests/vectors/wechat/"
MCHID = "1230000109"
APPID = "wx7e57c0de00000001"
MERCHANT_SERIAL = "7E57C0DE0000000000000000000000000000A001"
PUB_KEY_ID = "PUB_KEY_ID_0100000000000000000000000000TEST"
API_V3_KEY = "TestOnlyApiV3Key-NotReal-32bytes"
OPENID = "oTestOnly_7e57c0de_openid001"


def read(name):
    with open(VECTORS + name, encoding="utf-8") as f:
        return f.read()


def client(base_url, notify_url="https://example.invalid/notify"):
    wp = WeChatPay(
        wechatpay_type=WeChatPayType.JSAPI,
        mchid=MCHID,
        private_key=read("merchant_private_key.pem"),
        cert_serial_no=MERCHANT_SERIAL,
        appid=APPID,
        apiv3_key=API_V3_KEY,
        notify_url=notify_url,
        public_key=read("platform_public_key.pem"),
        public_key_id=PUB_KEY_ID,
    )
    if base_url:
        wp._core._gate_way = base_url.rstrip("/")
    return wp


def out(step, call):
    try:
        code, body = call()
        try:
            body = json.loads(body) if body else None
        except (TypeError, ValueError):
            body = None
        print(json.dumps({"step": step, "code": code, "body": body}, ensure_ascii=False))
    except Exception as error:  # the SDK raises when an answer does not verify
        print(json.dumps({"step": step, "error": str(error)}, ensure_ascii=False))
    sys.stdout.flush()


def orders(base_url, notify_url):
    wp = client(base_url, notify_url)
    out("pay", lambda: wp.pay(description="门诊挂号费 心内科", out_trade_no="PEER000000000001",
                              amount={"total": 1500}, payer={"openid": OPENID}))
    out("pay_again", lambda: wp.pay(description="门诊挂号费 心内科", out_trade_no="PEER000000000001",
                                    amount={"total": 1500}, payer={"openid": OPENID}))
    out("pay_other_amount", lambda: wp.pay(description="门诊挂号费 心内科", out_trade_no="PEER000000000001",
                                           amount={"total": 1}, payer={"openid": OPENID}))
    out("query", lambda: wp.query(out_trade_no="PEER000000000001"))
    out("native", lambda: wp.pay(description="房费预付", out_trade_no="PEER000000000002",
                                 amount={"total": 38800}, pay_type=WeChatPayType.NATIVE))
    out("close", lambda: wp.close(out_trade_no="PEER000000000002"))
    out("query_closed", lambda: wp.query(out_trade_no="PEER000000000002"))
    out("query_missing", lambda: wp.query(out_trade_no="PEER000000000404"))


def paid(base_url, notify_url):
    wp = client(base_url, notify_url)
    out("query_paid", lambda: wp.query(out_trade_no="PEER000000000001"))
    out("refund", lambda: wp.refund(out_refund_no="PEERRFD000000001", out_trade_no="PEER000000000001",
                                    amount={"refund": 500, "total": 1500, "currency": "CNY"}, reason="取消挂号"))
    out("query_refund", lambda: wp.query_refund(out_refund_no="PEERRFD000000001"))


def callbacks():
    wp = client(None)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        message = json.loads(line)
        try:
            result = wp.callback(message["headers"], message["body"])
        except Exception as error:
            result = {"error": str(error)}
        print(json.dumps(result, ensure_ascii=False))
        sys.stdout.flush()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "orders":
        orders(sys.argv[2], sys.argv[3])
    elif command == "paid":
        paid(sys.argv[2], sys.argv[3])
    elif command == "certificates":
        # The fake signs under its platform certificate: not the public key
        # given, so the SDK downloads /v3/certificates from the fake.
        wp = client(sys.argv[2])
        out("query_under_certificate", lambda: wp.query(out_trade_no="PEER000000000001"))
    elif command == "callbacks":
        callbacks()
    else:
        sys.exit("unknown command " + command)
